//! Codec property tests: every single-bit flip and every truncation of a segment
//! decodes to exactly the valid prefix and is classified right; no input panics.
//!
//! Not here: files and I/O (the scan under test is pure).

use proptest::prelude::*;

use super::super::Lsn;
use super::super::record::{self, InvalidRecord, MAX_PAYLOAD_BYTES, decode_at, encode_into, framed_len};
use super::super::replay::{SegmentEnd, SegmentScan, scan_segment};
use super::super::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, parse_segment_name, segment_name};

/// A segment image: header, records, then `trailing_zero_bytes` of zeros.
struct Image {
    bytes: Vec<u8>,
    first_lsn: Lsn,
    /// `[start, end)` of each record.
    spans: Vec<(usize, usize)>,
    payloads: Vec<Vec<u8>>,
}

fn image(salt: u32, first_lsn: Lsn, payloads: Vec<Vec<u8>>, trailing_zero_bytes: usize) -> Image {
    let mut bytes = SegmentHeader { first_lsn, salt }.encode().to_vec();
    let mut spans = Vec::new();
    let mut body = Vec::new();
    for (lsn, payload) in (first_lsn..).zip(&payloads) {
        let start = SEGMENT_HEADER_BYTES + body.len();
        encode_into(&mut body, salt, lsn, payload);
        spans.push((start, SEGMENT_HEADER_BYTES + body.len()));
    }
    bytes.extend_from_slice(&body);
    bytes.resize(bytes.len() + trailing_zero_bytes, 0);
    Image {
        bytes,
        first_lsn,
        spans,
        payloads,
    }
}

/// Scans like the newest segment of a log starting at the image's first LSN.
fn scan(bytes: &[u8], first_lsn: Lsn) -> (SegmentScan, Vec<(Lsn, Vec<u8>)>) {
    let mut records = Vec::new();
    let mut on_record = |lsn: Lsn, payload: &[u8]| {
        records.push((lsn, payload.to_vec()));
        Ok::<(), ()>(())
    };
    let result = scan_segment(bytes, first_lsn, None, first_lsn - 1, &mut on_record).expect("callback never fails");
    (result, records)
}

/// The first `count` records of the image.
fn prefix(image: &Image, count: usize) -> Vec<(Lsn, Vec<u8>)> {
    (image.first_lsn..)
        .zip(image.payloads.iter().cloned())
        .take(count)
        .collect()
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..5)
}

#[track_caller]
fn check_flip(image: &Image, bit: usize) {
    let mut bytes = image.bytes.clone();
    bytes[bit / 8] ^= 1 << (bit % 8);
    let byte = bit / 8;
    let (result, records) = scan(&bytes, image.first_lsn);
    if byte < SEGMENT_HEADER_BYTES {
        assert!(records.is_empty(), "bit {bit}: a damaged header yields nothing");
        assert!(
            matches!(result.end, SegmentEnd::Corrupt { offset: 0, .. }),
            "bit {bit}: {:?}",
            result.end
        );
        return;
    }
    let hit = image
        .spans
        .iter()
        .position(|&(start, end)| (start..end).contains(&byte));
    let valid = hit.unwrap_or(image.spans.len());
    assert_eq!(
        records,
        prefix(image, valid),
        "bit {bit}: exactly the records before the flip"
    );
    let offset = image
        .spans
        .get(valid)
        .map_or(image.spans.last().map_or(SEGMENT_HEADER_BYTES, |s| s.1), |s| s.0);
    match hit {
        Some(idx) if idx + 1 < image.spans.len() => {
            assert!(
                matches!(result.end, SegmentEnd::Corrupt { offset: o, .. } if o == offset as u64),
                "bit {bit}"
            )
        }
        _ => assert!(
            matches!(result.end, SegmentEnd::Torn { offset: o, .. } if o == offset as u64),
            "bit {bit}"
        ),
    }
}

#[track_caller]
fn check_truncation(image: &Image, len: usize) {
    let bytes = &image.bytes[..len];
    let (result, records) = scan(bytes, image.first_lsn);
    if len < SEGMENT_HEADER_BYTES {
        assert!(records.is_empty());
        assert!(
            matches!(result.end, SegmentEnd::Unborn { .. }),
            "len {len}: {:?}",
            result.end
        );
        return;
    }
    let complete = image.spans.iter().take_while(|&&(_, end)| end <= len).count();
    assert_eq!(
        records,
        prefix(image, complete),
        "len {len}: exactly the complete records"
    );
    let boundary = image
        .spans
        .get(complete.wrapping_sub(1))
        .map_or(SEGMENT_HEADER_BYTES, |s| s.1)
        .min(len);
    match bytes[boundary..].iter().all(|&b| b == 0) {
        true => assert_eq!(result.end, SegmentEnd::Clean, "len {len}"),
        false => assert!(
            matches!(result.end, SegmentEnd::Torn { offset, .. } if offset == boundary as u64),
            "len {len}"
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_bit_flip_decodes_to_the_valid_prefix(
        salt in any::<u32>(), first_lsn in 1..1_000_u64, payloads in payloads(), zeros in 0..4_usize,
    ) {
        let image = image(salt, first_lsn, payloads, zeros * 16);
        let (clean, records) = scan(&image.bytes, first_lsn);
        prop_assert_eq!(clean.end, SegmentEnd::Clean);
        prop_assert_eq!(records, prefix(&image, image.payloads.len()));
        for bit in 0..image.bytes.len() * 8 {
            check_flip(&image, bit);
        }
    }

    #[test]
    fn every_truncation_decodes_to_the_valid_prefix(
        salt in any::<u32>(), first_lsn in 1..1_000_u64, payloads in payloads(),
    ) {
        let image = image(salt, first_lsn, payloads, 0);
        for len in 0..=image.bytes.len() {
            check_truncation(&image, len);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), salt in any::<u32>()) {
        let _ = scan(&bytes, 1);
        let mut with_header = SegmentHeader { first_lsn: 1, salt }.encode().to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = scan(&with_header, 1);
    }

    #[test]
    fn records_round_trip(salt in any::<u32>(), lsn in any::<u64>(), payload in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, salt, lsn, &payload);
        prop_assert_eq!(bytes.len(), framed_len(payload.len()));
        prop_assert_eq!(bytes.len() % 16, 0);
        let decoded = decode_at(&bytes, 0, salt).expect("decodes");
        prop_assert_eq!((decoded.lsn, decoded.payload, decoded.end_offset), (lsn, &payload[..], bytes.len()));
        // Another segment's salt never validates it.
        prop_assert_eq!(decode_at(&bytes, 0, salt ^ 1).err(), Some(InvalidRecord::CrcMismatch));
    }
}

/// A `len` larger than the maximum or than the file is refused before any use of it.
#[test]
fn oversized_len_is_rejected_before_reading() {
    let mut bytes = vec![0_u8; 32];
    bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode_at(&bytes, 0, 7).err(),
        Some(InvalidRecord::LenTooLarge { len: u32::MAX })
    );
    let len = 100_u32;
    bytes[0..4].copy_from_slice(&len.to_le_bytes());
    assert_eq!(decode_at(&bytes, 0, 7).err(), Some(InvalidRecord::PastEnd { len }));
    assert!(MAX_PAYLOAD_BYTES < u32::MAX as usize);
    assert_eq!(record::framed_len(0), 16);
    assert_eq!(record::framed_len(1), 32);
    assert_eq!(record::framed_len(16), 32);
}

#[test]
fn segment_names_sort_by_lsn_and_parse_back() {
    assert_eq!(segment_name(42), "00000000000000000042.wal");
    assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
    for not_a_segment in [
        "42.wal",
        "00000000000000000042.wal.salvaged-64",
        "0000000000000000004x.wal",
        ".wal",
    ] {
        assert_eq!(parse_segment_name(not_a_segment), None, "{not_a_segment}");
    }
    assert!(segment_name(9) < segment_name(10));
}

#[test]
fn segment_header_round_trips_and_detects_damage() {
    let header = SegmentHeader {
        first_lsn: 77,
        salt: 0xDEAD_BEEF,
    };
    let bytes = header.encode();
    assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes;
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(SegmentHeader::decode(&damaged).is_err(), "bit {bit}");
    }
    assert!(SegmentHeader::decode(&bytes[..31]).is_err());
}

#[test]
fn a_checksum_combined_from_a_precomputed_payload_crc_is_the_one_decode_computes() {
    let salt = 0x5EED_1234;
    for len in [0, 1, 15, 4096, record::PRECOMPUTED_CRC_MIN_BYTES, 3 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let direct = record::header(salt, 77, &payload, None);
        let combined = record::header(salt, 77, &payload, Some(crc32c::crc32c(&payload)));
        assert_eq!(direct, combined, "payload of {len} bytes");
        let mut bytes = Vec::new();
        encode_into(&mut bytes, salt, 77, &payload);
        let decoded = decode_at(&bytes, 0, salt).expect("decodes");
        assert_eq!((decoded.lsn, decoded.payload), (77, &payload[..]));
    }
}
