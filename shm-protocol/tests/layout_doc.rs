//! Keeps docs/shm-layout.md (the normative layout) and layout.rs in sync:
//! every constant and field offset the document states is checked here.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use nexus_shm_protocol::layout::*;

fn doc_table_values() -> HashMap<String, u64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/shm-layout.md");
    let doc = std::fs::read_to_string(path).expect("docs/shm-layout.md exists");
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let value = cells.get(2)?.parse().ok()?;
            Some((cells.get(1)?.to_string(), value))
        })
        .collect()
}

#[track_caller]
fn check(values: &HashMap<String, u64>, name: &str, actual: u64) {
    assert_eq!(
        values.get(name).copied(),
        Some(actual),
        "docs/shm-layout.md disagrees on {name}"
    );
}

#[test]
fn constants_match_the_document() {
    let values = doc_table_values();
    check(&values, "SEGMENT_HEADER_REGION_BYTES", SEGMENT_HEADER_REGION_BYTES);
    check(&values, "REQUEST_RING_HEADER_OFFSET", REQUEST_RING_HEADER_OFFSET);
    check(&values, "RESPONSE_RING_HEADER_OFFSET", RESPONSE_RING_HEADER_OFFSET);
    check(&values, "FRAME_ALIGN_BYTES", FRAME_ALIGN_BYTES);
    check(&values, "FRAME_HEADER_BYTES", FRAME_HEADER_BYTES);
    check(&values, "MIN_RING_BYTES", u64::from(MIN_RING_BYTES));
    check(&values, "MAX_RING_BYTES", u64::from(MAX_RING_BYTES));
    check(&values, "SEGMENT_HEADER_SIZE", size_of::<SegmentHeader>() as u64);
    check(&values, "RING_HEADER_SIZE", size_of::<RingHeader>() as u64);
}

#[test]
fn field_offsets_match_the_document() {
    // The field tables list offsets first: "| offset | field | ...".
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/shm-layout.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let offsets: HashMap<String, u64> = doc
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            Some((cells.get(2)?.to_string(), cells.get(1)?.parse().ok()?))
        })
        .collect();
    let expect = [
        ("magic", offset_of!(SegmentHeader, magic)),
        ("protocol_version", offset_of!(SegmentHeader, protocol_version)),
        ("max_frame_bytes", offset_of!(SegmentHeader, max_frame_bytes)),
        ("segment_bytes", offset_of!(SegmentHeader, segment_bytes)),
        (
            "response_capacity_bytes",
            offset_of!(SegmentHeader, response_capacity_bytes),
        ),
        ("reserved", offset_of!(SegmentHeader, reserved)),
        ("tail", offset_of!(RingHeader, tail)),
        ("producer_waiting", offset_of!(RingHeader, producer_waiting)),
        ("head", offset_of!(RingHeader, head)),
        ("consumer_sleeping", offset_of!(RingHeader, consumer_sleeping)),
    ];
    for (field, offset) in expect {
        assert_eq!(
            offsets.get(field).copied(),
            Some(offset as u64),
            "docs/shm-layout.md disagrees on {field}"
        );
    }
}
