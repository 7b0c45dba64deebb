//! Plain-old-data views of segment bytes: checked casts from bytes (a
//! memory map, of a file or anonymous) to the integer and float arrays of a
//! segment.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_check_alignment_and_length() {
        // Anonymous memory is page-aligned.
        let mut bytes = memmap2::MmapMut::map_anon(256).unwrap();
        cast_mut::<u32>(&mut bytes[..8]).unwrap()[1] = 0x0102_0304;
        assert_eq!(cast::<u32>(&bytes[..8]).unwrap(), &[0, 0x0102_0304]);
        assert_eq!(&bytes[4..8], &[4, 3, 2, 1]);
        assert!(cast::<u32>(&bytes[1..9]).is_none(), "misaligned");
        assert!(cast::<u64>(&bytes[..12]).is_none(), "length not a multiple");
        assert_eq!(cast::<i8>(&bytes[..130]).unwrap().len(), 130);
    }
}
