//! Plain-old-data views of segment bytes: a cache-line aligned buffer for
//! images built in memory, and checked casts from bytes (a memory map or that
//! buffer) to the integer and float arrays of a segment.
//!
//! The segment format is little-endian and read in place, so this module
//! refuses to compile for a big-endian target rather than misread files.
//! Casts check alignment and length and return `None` instead of panicking;
//! the values themselves are validated by `segment`.

#[cfg(target_endian = "big")]
compile_error!("ANN segments are little-endian arrays used in place; big-endian targets are not supported");

/// Types every bit pattern of which is a valid value, with no padding: a
/// byte slice of the right length and alignment may be viewed as a slice of
/// them.
pub(crate) trait Plain: Copy + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Plain for $t {}
    )*};
}
plain!(u8, i8, u32, u64, f32);

/// `bytes` as a `[T]`, if its address is aligned for `T` and its length a
/// multiple of `T`'s size.
pub(crate) fn cast<T: Plain>(bytes: &[u8]) -> Option<&[T]> {
    // SAFETY: `T: Plain` is an integer or float type: every bit pattern is a
    // valid value and it has no padding, so reinterpreting initialised bytes
    // is sound; `align_to` puts in `middle` only properly aligned elements.
    let (prefix, middle, suffix) = unsafe { bytes.align_to::<T>() };
    (prefix.is_empty() && suffix.is_empty()).then_some(middle)
}

/// [`cast`] for a mutable slice.
pub(crate) fn cast_mut<T: Plain>(bytes: &mut [u8]) -> Option<&mut [T]> {
    // SAFETY: as in `cast`; any value written through `[T]` is also a valid
    // sequence of bytes.
    let (prefix, middle, suffix) = unsafe { bytes.align_to_mut::<T>() };
    (prefix.is_empty() && suffix.is_empty()).then_some(middle)
}

/// Bytes per cache line: sections of a segment start on one, so a 384-byte
/// code row spans six lines, not seven.
pub(crate) const CACHE_LINE_BYTES: usize = 64;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct CacheLine([u8; CACHE_LINE_BYTES]);

/// A zeroed byte buffer whose start is cache-line aligned.
pub(crate) struct AlignedBytes {
    lines: Vec<CacheLine>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Self {
        Self {
            lines: vec![CacheLine([0; CACHE_LINE_BYTES]); len.div_ceil(CACHE_LINE_BYTES)],
            len,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        // SAFETY: `lines` is `len.div_ceil(64)` initialised `[u8; 64]` with no
        // padding (repr(C) of one array), contiguous in the Vec, so its first
        // `len` bytes are initialised and inside the allocation.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.len) }
    }

    pub(crate) fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_check_alignment_and_length() {
        let mut buffer = AlignedBytes::zeroed(130);
        assert_eq!(buffer.as_bytes().as_ptr() as usize % CACHE_LINE_BYTES, 0);
        cast_mut::<u32>(&mut buffer.as_bytes_mut()[..8]).unwrap()[1] = 0x0102_0304;
        let bytes = buffer.as_bytes();
        assert_eq!(cast::<u32>(&bytes[..8]).unwrap(), &[0, 0x0102_0304]);
        assert_eq!(&bytes[4..8], &[4, 3, 2, 1]);
        assert!(cast::<u32>(&bytes[1..9]).is_none(), "misaligned");
        assert!(cast::<u64>(&bytes[..12]).is_none(), "length not a multiple");
        assert_eq!(cast::<i8>(&bytes[..130]).unwrap().len(), 130);
    }
}
