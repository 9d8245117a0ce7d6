//! Table-driven CRC-32 for header checksums: IEEE (GPT) and Castagnoli
//! (VHDX). A dependency would be more code than this.

/// A reflected CRC-32 with its lookup table.
pub(crate) struct Crc([u32; 256]);

impl Crc {
    /// The table for a reflected polynomial.
    pub(crate) const fn new(poly: u32) -> Self {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { poly ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        Crc(t)
    }

    /// Feed `data` into a running (pre-inverted) value; start with
    /// `0xffff_ffff` and invert the result.
    pub(crate) fn update(&self, mut c: u32, data: &[u8]) -> u32 {
        for &b in data {
            c = self.0[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
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
}
