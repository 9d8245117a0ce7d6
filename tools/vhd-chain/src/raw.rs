//! Byte-level helpers shared by the VHD readers and writers: big-endian
//! fields that never panic on a short buffer, the one's-complement
//! checksum of footers and headers (notes/vhd.md section 2.3), and sector
//! arithmetic.

/// Bytes per sector.
pub const SECTOR: u64 = 512;
/// A BAT entry for a block that is not allocated.
pub const UNALLOCATED: u32 = 0xffff_ffff;

/// The big-endian u32 at `o` (0 when `b` is too short).
pub fn be32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// The big-endian u64 at `o` (0 when `b` is too short).
pub fn be64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Copy `bytes` to `buf` at `at`, as far as `buf` goes.
pub fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// The VHD checksum of `buf`: the one's complement of the byte sum, the
/// four checksum bytes at `skip` left out.
pub fn checksum(buf: &[u8], skip: usize) -> u32 {
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < skip || *i >= skip + 4)
        .fold(0u32, |a, (_, b)| a.wrapping_add(u32::from(*b)));
    !sum
}

/// Recompute and store the checksum at `at`.
pub fn reseal(buf: &mut [u8], at: usize) {
    let sum = checksum(buf, at);
    put(buf, at, &sum.to_be_bytes());
}

/// `n` rounded up to whole sectors.
pub fn padded(n: u64) -> u64 {
    n.div_ceil(SECTOR).saturating_mul(SECTOR)
}

/// The first sector at or after `s` whose next sector starts on a 4 KiB
/// boundary: a block's bitmap goes there so that its data is aligned.
pub fn aligned(s: u64) -> u64 {
    s + (7 - s % 8)
}

/// Whether every byte is zero.
pub fn all_zero(b: &[u8]) -> bool {
    b.chunks(4096)
        .all(|c| c.iter().fold(0u8, |a, x| a | x) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_read_as_zero() {
        assert_eq!(be32(&[1, 2, 3], 0), 0);
        assert_eq!(be64(&[0; 8], 1), 0);
        assert_eq!(be32(&[0, 0, 1, 0], 0), 256);
        let mut b = [0u8; 4];
        put(&mut b, 2, &[9, 9, 9]);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn sealed_buffers_check() {
        let mut b = vec![7u8; 512];
        reseal(&mut b, 64);
        assert_eq!(checksum(&b, 64), be32(&b, 64));
        assert_eq!(aligned(0), 7);
        assert_eq!(aligned(7), 7);
        assert_eq!(aligned(8), 15);
        assert_eq!(padded(1), 512);
    }
}
