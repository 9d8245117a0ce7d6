//! Table-driven CRC-32 for header checksums: IEEE (GPT) and Castagnoli
//! (VHDX), slicing by 8 bytes (a VHDX probe checksums about 140 KiB of
//! headers and region tables). A dependency would be more code than this.

/// A reflected CRC-32 with its slicing-by-8 lookup tables.
pub(crate) struct Crc([[u32; 256]; 8]);

impl Crc {
    /// The tables for a reflected polynomial.
    pub(crate) const fn new(poly: u32) -> Self {
        let mut t = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { poly ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut s = 1;
        while s < 8 {
            let mut i = 0;
            while i < 256 {
                let prev = t[s - 1][i];
                t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
                i += 1;
            }
            s += 1;
        }
        Crc(t)
    }

    /// Feed `data` into a running (pre-inverted) value; start with
    /// `0xffff_ffff` and invert the result.
    pub(crate) fn update(&self, mut c: u32, data: &[u8]) -> u32 {
        let t = &self.0;
        let mut chunks = data.chunks_exact(8);
        for w in &mut chunks {
            let lo = c ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            c = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][w[4] as usize]
                ^ t[2][w[5] as usize]
                ^ t[1][w[6] as usize]
                ^ t[0][w[7] as usize];
        }
        for &b in chunks.remainder() {
            c = t[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        c
    }

    /// The checksum of `data`.
    pub(crate) fn checksum(&self, data: &[u8]) -> u32 {
        !self.update(0xffff_ffff, data)
    }
}

/// CRC-32 (IEEE 802.3), as GPT uses it.
pub(crate) static IEEE: Crc = Crc::new(0xEDB8_8320);
/// CRC-32C (Castagnoli), as VHDX uses it.
pub(crate) static CASTAGNOLI: Crc = Crc::new(0x82F6_3B78);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        // The standard check input "123456789".
        assert_eq!(IEEE.checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn slicing_matches_bytewise_at_every_length_and_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for crc in [&IEEE, &CASTAGNOLI] {
            let bytewise = |d: &[u8]| {
                let mut c = 0xffff_ffffu32;
                for &b in d {
                    c = crc.0[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
                }
                !c
            };
            for n in 0..data.len() {
                assert_eq!(crc.checksum(&data[..n]), bytewise(&data[..n]), "{n}");
                let split = n / 3;
                let c = crc.update(crc.update(0xffff_ffff, &data[..split]), &data[split..n]);
                assert_eq!(!c, bytewise(&data[..n]));
            }
        }
    }
}
