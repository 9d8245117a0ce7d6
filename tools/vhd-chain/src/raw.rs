//! Placement helpers for the writers (the format itself, fields,
//! checksums and sizes, is `formats::vhd`).

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
    fn blocks_are_aligned_and_zeros_seen() {
        assert_eq!(aligned(0), 7);
        assert_eq!(aligned(7), 7);
        assert_eq!(aligned(8), 15);
        assert!(all_zero(&[0; 5000]));
        let mut b = [0u8; 5000];
        b[4999] = 1;
        assert!(!all_zero(&b));
    }
}
