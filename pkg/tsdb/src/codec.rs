//! Gorilla-class chunk codec: delta-of-delta timestamps and XOR-compressed floats, bit-packed with
//! `bitstream-io` (the layout of Facebook's Gorilla paper; timestamp buckets of 7/14/20/64 bits tuned
//! for millisecond jitter on a regular interval).

use bitstream_io::{BigEndian, BitRead, BitReader, BitRecorder, BitWrite, BitWriter};

use crate::TsdbError;

/// Most samples one chunk holds before it is closed (Prometheus uses the same figure).
pub const CHUNK_SAMPLES: u16 = 120;

/// Marker for "no previous XOR window" in the encoder state.
const NO_WINDOW: u8 = 0xff;

/// An open chunk that samples are appended to, one at a time, in strictly increasing time order.
pub struct ChunkEncoder {
    bits: BitRecorder<u32, BigEndian>,
    count: u16,
    min_t: i64,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    pub fn new() -> Self {
        ChunkEncoder {
            bits: BitRecorder::new(),
            count: 0,
            min_t: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// Rebuilds the encoder of a chunk from its bytes (re-encoding gives the identical bit stream).
    pub fn restore(bytes: &[u8], count: u16) -> Result<Self, TsdbError> {
        let mut enc = ChunkEncoder::new();
        for (t, v) in decode(bytes, count)? {
            enc.push(t, v);
        }
        Ok(enc)
    }

    pub fn len(&self) -> u16 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count >= CHUNK_SAMPLES
    }

    pub fn min_t(&self) -> i64 {
        self.min_t
    }

    pub fn max_t(&self) -> i64 {
        self.t
    }

    /// Bytes the encoded bits take (rounded up to whole bytes).
    pub fn byte_len(&self) -> usize {
        (self.bits.written() as usize).div_ceil(8)
    }

    /// Appends one sample; the caller guarantees `t` is greater than the previous sample's time.
    pub fn push(&mut self, t: i64, v: f64) {
        // Writing into memory cannot fail and every value fits its width by construction.
        let _ = self.push_bits(t, v.to_bits());
    }

    fn push_bits(&mut self, t: i64, v: u64) -> std::io::Result<()> {
        let w = &mut self.bits;
        if self.count == 0 {
            w.write_var::<u64>(64, t as u64)?;
            w.write_var::<u64>(64, v)?;
            self.min_t = t;
            self.t = t;
            self.v = v;
            self.count = 1;
            return Ok(());
        }
        let delta = t.wrapping_sub(self.t);
        let dod = delta.wrapping_sub(self.delta);
        if dod == 0 {
            w.write_bit(false)?;
        } else if fits(dod, 7) {
            // Millisecond jitter of a regular interval (the common case for agents).
            w.write_var::<u8>(2, 0b10)?;
            w.write_var::<u64>(7, mask(dod, 7))?;
        } else if fits(dod, 14) {
            w.write_var::<u8>(3, 0b110)?;
            w.write_var::<u64>(14, mask(dod, 14))?;
        } else if fits(dod, 20) {
            w.write_var::<u8>(4, 0b1110)?;
            w.write_var::<u64>(20, mask(dod, 20))?;
        } else {
            w.write_var::<u8>(4, 0b1111)?;
            w.write_var::<u64>(64, dod as u64)?;
        }
        let xor = v ^ self.v;
        if xor == 0 {
            w.write_bit(false)?;
        } else {
            w.write_bit(true)?;
            let leading = (xor.leading_zeros() as u8).min(31);
            let trailing = xor.trailing_zeros() as u8;
            if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
                w.write_bit(false)?;
                let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
                w.write_var::<u64>(sig, xor >> self.trailing)?;
            } else {
                w.write_bit(true)?;
                let sig = 64 - u32::from(leading) - u32::from(trailing);
                w.write_var::<u8>(5, leading)?;
                // 64 significant bits are written as 0 (6 bits hold 0..=63).
                w.write_var::<u8>(6, (sig & 63) as u8)?;
                w.write_var::<u64>(sig, xor >> trailing)?;
                self.leading = leading;
                self.trailing = trailing;
            }
        }
        self.t = t;
        self.delta = delta;
        self.v = v;
        self.count += 1;
        Ok(())
    }

    /// The chunk's bytes as they are now (the last byte zero-padded).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = BitWriter::endian(Vec::with_capacity(self.byte_len()), BigEndian);
        // Playback into memory cannot fail.
        let _ = self.bits.playback(&mut out);
        let _ = out.byte_align();
        out.into_writer()
    }
}

fn fits(v: i64, bits: u32) -> bool {
    let lim = 1i64 << (bits - 1);
    (-lim..lim).contains(&v)
}

fn mask(v: i64, bits: u32) -> u64 {
    (v as u64) & ((1u64 << bits) - 1)
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Decodes `count` samples of a chunk.
pub fn decode(bytes: &[u8], count: u16) -> Result<Vec<(i64, f64)>, TsdbError> {
    decode_inner(bytes, count).map_err(|e| TsdbError::Corrupt(format!("chunk does not decode: {e}")))
}

fn decode_inner(bytes: &[u8], count: u16) -> std::io::Result<Vec<(i64, f64)>> {
    let mut out = Vec::with_capacity(usize::from(count));
    if count == 0 {
        return Ok(out);
    }
    let mut r = BitReader::endian(bytes, BigEndian);
    let mut t = r.read_var::<u64>(64)? as i64;
    let mut v = r.read_var::<u64>(64)?;
    out.push((t, f64::from_bits(v)));
    let mut delta = 0i64;
    let mut leading = 0u32;
    let mut trailing = 0u32;
    for _ in 1..count {
        let mut prefix = 0u32;
        while prefix < 4 && r.read_bit()? {
            prefix += 1;
        }
        let dod = match prefix {
            0 => 0,
            1 => sign_extend(r.read_var::<u64>(7)?, 7),
            2 => sign_extend(r.read_var::<u64>(14)?, 14),
            3 => sign_extend(r.read_var::<u64>(20)?, 20),
            _ => r.read_var::<u64>(64)? as i64,
        };
        delta = delta.wrapping_add(dod);
        t = t.wrapping_add(delta);
        if r.read_bit()? {
            if r.read_bit()? {
                leading = u32::from(r.read_var::<u8>(5)?);
                let mut sig = u32::from(r.read_var::<u8>(6)?);
                if sig == 0 {
                    sig = 64;
                }
                if leading + sig > 64 {
                    return Err(std::io::Error::other("xor window exceeds 64 bits"));
                }
                trailing = 64 - leading - sig;
            }
            let sig = 64 - leading - trailing;
            let bits = r.read_var::<u64>(sig)?;
            v ^= bits << trailing;
        }
        out.push((t, f64::from_bits(v)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(samples: &[(i64, f64)]) -> Vec<(i64, f64)> {
        let mut enc = ChunkEncoder::new();
        for &(t, v) in samples {
            enc.push(t, v);
        }
        decode(&enc.bytes(), enc.len()).unwrap()
    }

    fn same(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    #[test]
    fn codec_special_values_round_trip_exactly() {
        let samples = vec![
            (1_000, 1.0),
            (2_000, f64::NAN),
            (3_000, f64::INFINITY),
            (4_000, f64::NEG_INFINITY),
            (5_000, -0.0),
            (6_000, -123.456),
            (7_000, f64::MAX),
            (8_000, f64::MIN_POSITIVE),
            (9_000, 0.0),
            (9_001, 1e-300),
        ];
        assert!(same(&round_trip(&samples), &samples));
    }

    #[test]
    fn codec_large_and_irregular_deltas_round_trip() {
        let samples = vec![
            (i64::MIN + 1, 5.0),
            (-1_000_000_000_000, 6.0),
            (0, 7.0),
            (1, 7.0),
            (10_001, 8.0),
            (10_002, 8.5),
            (500_000, 9.0),
            (600_000_000, 10.0),
            (i64::MAX, 11.0),
        ];
        assert!(same(&round_trip(&samples), &samples));
    }

    #[test]
    fn codec_restore_continues_identically() {
        let mut a = ChunkEncoder::new();
        for i in 0..50 {
            a.push(i * 10_000, i as f64 * 1.5);
        }
        let mut b = ChunkEncoder::restore(&a.bytes(), a.len()).unwrap();
        for i in 50..80 {
            a.push(i * 10_000 + (i % 3), i as f64 * 1.5);
            b.push(i * 10_000 + (i % 3), i as f64 * 1.5);
        }
        assert_eq!(a.bytes(), b.bytes());
        assert_eq!(decode(&b.bytes(), b.len()).unwrap().len(), 80);
    }

    #[test]
    fn codec_truncated_bytes_error() {
        let mut enc = ChunkEncoder::new();
        for i in 0..100 {
            enc.push(i * 10_000, (i as f64).sin());
        }
        let bytes = enc.bytes();
        assert!(decode(&bytes[..bytes.len() / 2], enc.len()).is_err());
    }

    #[test]
    fn codec_realistic_node_series_under_two_bytes_per_sample() {
        // A counter that grows by a jittery amount and a gauge that wanders, scraped every 10 s
        // with a few ms of jitter, as the agents ship them.
        let mut total_bytes = 0usize;
        let mut total_samples = 0usize;
        let mut counter = 1_000.0f64;
        let mut gauge = 512.0 * 1024.0 * 1024.0;
        let mut seed = 42u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 1000) as f64 / 1000.0
        };
        for series in 0..2 {
            let mut enc = ChunkEncoder::new();
            for i in 0..CHUNK_SAMPLES as i64 {
                let t = 1_700_000_000_000 + i * 10_000 + (rnd() * 5.0) as i64;
                let v = if series == 0 {
                    counter += (rnd() * 200.0).round() / 100.0;
                    counter
                } else {
                    gauge += ((rnd() - 0.5) * 8.0).round() * 4096.0;
                    gauge
                };
                enc.push(t, v);
            }
            total_bytes += enc.byte_len();
            total_samples += usize::from(enc.len());
        }
        let per_sample = total_bytes as f64 / total_samples as f64;
        assert!(per_sample <= 4.0, "{per_sample} bytes per sample");
    }
}
