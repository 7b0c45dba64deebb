//! A connection's shared segment: an unnamed, sealed memfd mapped by both sides.
//!
//! The daemon creates it (`Segment::create`), lays out the headers, seals its
//! size and passes the fd over the handshake socket; the client maps what it
//! received (`Segment::map`) and checks the header. Nothing here knows about
//! frames beyond handing out the two ring ends of each side.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{MmapMut, MmapOptions};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::layout::{LayoutError, REQUEST_RING_HEADER_OFFSET, RESPONSE_RING_HEADER_OFFSET, RingHeader, SegmentHeader};
use crate::ring::{Consumer, Producer, ring_ends_from_raw};

/// Failure to create, map or split a segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// A syscall failed (memfd_create, ftruncate, fcntl, fstat, mmap).
    #[error("{op} failed: {source}")]
    Sys {
        /// Which operation.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The segment's layout is not acceptable.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// This side's ring ends were already taken from this segment.
    #[error("the ring ends of this side were already taken")]
    AlreadyTaken,
    /// The fd is not sealed against resizing: another holder could shrink it
    /// under our mapping.
    #[error("the segment fd is not sealed against resizing (seals {seals:#x})")]
    Unsealed {
        /// The seals the fd carries.
        seals: i32,
    },
}

fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> SegmentError {
    move |errno| SegmentError::Sys {
        op,
        source: errno.into(),
    }
}

/// A mapped segment. Ring ends keep it alive through an `Arc`.
pub struct Segment {
    map: MmapMut,
    header: SegmentHeader,
    daemon_side_taken: AtomicBool,
    client_side_taken: AtomicBool,
}

impl Segment {
    /// Daemon side: creates a sealed memfd of the header's size, maps it and
    /// writes the headers. Returns the segment and the fd to pass to the client.
    pub fn create(header: SegmentHeader) -> Result<(Arc<Segment>, OwnedFd), SegmentError> {
        let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let fd = memfd_create(c"nexus-segment", flags).map_err(sys("memfd_create"))?;
        let len = i64::try_from(header.segment_bytes).expect("segment size is bounded by MAX_RING_BYTES");
        nix::unistd::ftruncate(&fd, len).map_err(sys("ftruncate"))?;
        // Neither side can resize the segment under the other's mapping (which
        // would SIGBUS the daemon), and no one can lift the seals.
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(sys("fcntl(F_ADD_SEALS)"))?;
        let mut map = map_fd(&fd, header.segment_bytes)?;
        write_headers(&mut map, &header);
        Ok((Arc::new(Self::from_map(map, header)), fd))
    }

    /// Client side: maps a segment received from the daemon and validates its
    /// header. The fd must carry the seals [`Segment::create`] sets: a segment
    /// that could still shrink would let whoever else holds it SIGBUS us.
    pub fn map(fd: &OwnedFd) -> Result<Arc<Segment>, SegmentError> {
        check_seals(fd)?;
        let stat = nix::sys::stat::fstat(fd).map_err(sys("fstat"))?;
        let len = u64::try_from(stat.st_size).map_err(|_| LayoutError::BadHeader("negative size"))?;
        if len < crate::layout::SEGMENT_HEADER_REGION_BYTES {
            return Err(LayoutError::BadHeader("segment smaller than its header page").into());
        }
        let map = map_fd(fd, len)?;
        // SAFETY: the mapping is at least one page long and page-aligned, so a
        // SegmentHeader (128 B, align 8) can be read at offset 0.
        let header = unsafe { std::ptr::read_volatile(map.as_ptr().cast::<SegmentHeader>()) };
        header.validate(len)?;
        Ok(Arc::new(Self::from_map(map, header)))
    }

    /// The header this segment was laid out with.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The daemon's ends: it consumes requests and produces responses.
    pub fn daemon_ends(self: &Arc<Self>) -> Result<(Consumer, Producer), SegmentError> {
        take(&self.daemon_side_taken)?;
        let (_, requests) = self.ring_ends(
            REQUEST_RING_HEADER_OFFSET,
            self.header.request_data_offset,
            self.header.request_capacity_bytes,
        );
        let (responses, _) = self.ring_ends(
            RESPONSE_RING_HEADER_OFFSET,
            self.header.response_data_offset,
            self.header.response_capacity_bytes,
        );
        Ok((requests, responses))
    }

    /// The client's ends: it produces requests and consumes responses.
    pub fn client_ends(self: &Arc<Self>) -> Result<(Producer, Consumer), SegmentError> {
        take(&self.client_side_taken)?;
        let (requests, _) = self.ring_ends(
            REQUEST_RING_HEADER_OFFSET,
            self.header.request_data_offset,
            self.header.request_capacity_bytes,
        );
        let (_, responses) = self.ring_ends(
            RESPONSE_RING_HEADER_OFFSET,
            self.header.response_data_offset,
            self.header.response_capacity_bytes,
        );
        Ok((requests, responses))
    }

    fn from_map(map: MmapMut, header: SegmentHeader) -> Self {
        Self {
            map,
            header,
            daemon_side_taken: AtomicBool::new(false),
            client_side_taken: AtomicBool::new(false),
        }
    }

    fn ring_ends(self: &Arc<Self>, header_offset: u64, data_offset: u64, capacity: u64) -> (Producer, Consumer) {
        let base = self.map.as_ptr().cast_mut();
        let max_frame = u64::from(self.header.max_frame_bytes);
        // SAFETY: the header was validated (or built) by SegmentHeader, so the
        // ring header offset is 128-aligned inside the header page and the data
        // area [data_offset, data_offset + capacity) lies inside the mapping,
        // page-aligned, with capacity a power of two and max_frame within half
        // of it. The Arc keeps the mapping alive. Each side's ends are taken
        // once (see `take`), and the other end of each ring is unused here.
        unsafe {
            let header = base.add(header_offset as usize).cast::<RingHeader>();
            let data = base.add(data_offset as usize);
            ring_ends_from_raw(header, data, capacity, max_frame, self.clone())
        }
    }
}

/// Seals a mapped segment must carry: no shrinking (SIGBUS), no growing, and
/// no further changes to the seals.
const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

fn check_seals(fd: &OwnedFd) -> Result<(), SegmentError> {
    let seals = fcntl(fd.as_fd(), FcntlArg::F_GET_SEALS).map_err(sys("fcntl(F_GET_SEALS)"))?;
    let seals = SealFlag::from_bits_truncate(seals);
    if !seals.contains(REQUIRED_SEALS) {
        return Err(SegmentError::Unsealed { seals: seals.bits() });
    }
    Ok(())
}

fn take(flag: &AtomicBool) -> Result<(), SegmentError> {
    if flag.swap(true, Ordering::AcqRel) {
        Err(SegmentError::AlreadyTaken)
    } else {
        Ok(())
    }
}

fn map_fd(fd: &OwnedFd, len: u64) -> Result<MmapMut, SegmentError> {
    let len = usize::try_from(len).map_err(|_| LayoutError::BadHeader("segment too large"))?;
    // SAFETY: the fd is a memfd sealed against shrinking (the daemon sealed it
    // before sending it; the client checks the size with fstat first), so the
    // mapping never loses its backing pages and cannot SIGBUS. Concurrent
    // writes by the peer are the point of the mapping; every access goes
    // through the ring's atomics or is validated after a copy.
    unsafe { MmapOptions::new().len(len).map_mut(fd) }.map_err(|source| SegmentError::Sys { op: "mmap", source })
}

fn write_headers(map: &mut MmapMut, header: &SegmentHeader) {
    let base = map.as_mut_ptr();
    // SAFETY: the mapping is `header.segment_bytes` long (>= one page), page
    // aligned, and not yet shared with anyone, so plain writes at the layout's
    // offsets (aligned for each type) are exclusive and in bounds.
    unsafe {
        std::ptr::write(base.cast::<SegmentHeader>(), *header);
        std::ptr::write(
            base.add(REQUEST_RING_HEADER_OFFSET as usize).cast::<RingHeader>(),
            RingHeader::new(),
        );
        std::ptr::write(
            base.add(RESPONSE_RING_HEADER_OFFSET as usize).cast::<RingHeader>(),
            RingHeader::new(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::FrameKind;

    #[test]
    fn both_sides_of_a_memfd_segment_see_each_others_frames() {
        let header = SegmentHeader::new(4096, 8192, 1024).unwrap();
        let (daemon_segment, fd) = Segment::create(header).unwrap();
        let client_segment = Segment::map(&fd).unwrap();
        let (mut req_tx, resp_rx) = client_segment.client_ends().unwrap();
        let (mut req_rx, mut resp_tx) = daemon_segment.daemon_ends().unwrap();
        assert!(
            client_segment.client_ends().is_err(),
            "a side's ends are handed out once"
        );

        req_tx
            .try_write_bytes(FrameKind::Request, 7, b"hello")
            .unwrap()
            .unwrap();
        let frame = req_rx.peek().unwrap().unwrap();
        let mut copy = Vec::new();
        req_rx.copy_payload(&frame, &mut copy);
        assert_eq!((frame.request_id, copy.as_slice()), (7, &b"hello"[..]));
        req_rx.release(&frame);

        resp_tx
            .try_write_bytes(FrameKind::Response, 7, b"world")
            .unwrap()
            .unwrap();
        let frame = resp_rx.peek().unwrap().unwrap();
        // SAFETY: the daemon side does not touch the frame until it is released.
        assert_eq!(unsafe { resp_rx.payload_in_place(&frame) }, b"world");
    }

    #[test]
    fn the_segment_cannot_be_resized_after_sealing() {
        let header = SegmentHeader::new(4096, 4096, 1024).unwrap();
        let (_segment, fd) = Segment::create(header).unwrap();
        assert!(nix::unistd::ftruncate(&fd, 0).is_err());
        assert!(nix::unistd::ftruncate(&fd, 1 << 20).is_err());
    }

    #[test]
    fn the_client_refuses_an_unsealed_segment() {
        // A "daemon" that hands over a memfd it could still shrink: mapping it
        // would let the sender SIGBUS the client later.
        let header = SegmentHeader::new(4096, 4096, 1024).unwrap();
        let fd = memfd_create(c"unsealed", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&fd, header.segment_bytes as i64).unwrap();
        let mut map = map_fd(&fd, header.segment_bytes).unwrap();
        write_headers(&mut map, &header);
        assert!(matches!(Segment::map(&fd), Err(SegmentError::Unsealed { .. })));
    }
}
