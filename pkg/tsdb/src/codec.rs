//! Gorilla-class chunk codec: delta-of-delta timestamps and XOR-compressed floats, bit-packed with
//! `bitstream-io` (the layout of Facebook's Gorilla paper; timestamp buckets of 7/14/20/64 bits tuned
//! for millisecond jitter on a regular interval), plus a decimal-delta value mode: when both values are
//! exactly `m / 10^e` (counters in 1/100 s, nanoseconds as seconds, byte counts), the change of `m` is
//! written instead of the XOR whenever that is shorter — lossless, checked bit for bit.

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

    /// Rebuilds the encoder of a chunk from its bytes (re-encoding gives the identical bit stream,
    /// which the head state relies on when it re-encodes open chunks at load).
    #[cfg(test)]
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
            let leading = (xor.leading_zeros() as u8).min(31);
            let trailing = xor.trailing_zeros() as u8;
            let reuse =
                self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing;
            let xor_cost = if reuse {
                2 + 64 - u32::from(self.leading) - u32::from(self.trailing)
            } else {
                3 + 11 + 64 - u32::from(leading) - u32::from(trailing)
            };
            // Decimal delta: both values are m / 10^e with the previous value's exponent.
            let dec = decimal(f64::from_bits(self.v)).and_then(|(pm, e)| {
                let m = exact_mantissa(f64::from_bits(v), e)?;
                let zz = zigzag(m.checked_sub(pm)?);
                let n = 64 - zz.leading_zeros();
                (n <= 63).then_some((zz, n))
            });
            match dec {
                Some((zz, n)) if 3 + 6 + n < xor_cost => {
                    w.write_var::<u8>(3, 0b111)?;
                    w.write_var::<u8>(6, n as u8)?;
                    w.write_var::<u64>(n, zz)?;
                }
                _ if reuse => {
                    w.write_var::<u8>(2, 0b10)?;
                    let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
                    w.write_var::<u64>(sig, xor >> self.trailing)?;
                }
                _ => {
                    w.write_var::<u8>(3, 0b110)?;
                    let sig = 64 - u32::from(leading) - u32::from(trailing);
                    w.write_var::<u8>(5, leading)?;
                    // 64 significant bits are written as 0 (6 bits hold 0..=63).
                    w.write_var::<u8>(6, (sig & 63) as u8)?;
                    w.write_var::<u64>(sig, xor >> trailing)?;
                    self.leading = leading;
                    self.trailing = trailing;
                }
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

/// Exact powers of ten used by the decimal delta mode.
const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// Largest mantissa the decimal mode uses (integers up to 2^53 are exact in an f64).
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0;

/// `v` as `m / 10^e` with the smallest `e` in 0..=9, if that gives back `v` bit for bit.
fn decimal(v: f64) -> Option<(i64, u8)> {
    (0..POW10.len() as u8).find_map(|e| exact_mantissa(v, e).map(|m| (m, e)))
}

/// `m` with `m / 10^e == v` bit for bit, if there is one below 2^53.
fn exact_mantissa(v: f64, e: u8) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let p = POW10[usize::from(e)];
    let m = (v * p).round();
    // Checked the way the decoder rebuilds it (from the integer), so -0.0 never takes this path.
    (m.abs() < MAX_MANTISSA && ((m as i64) as f64 / p).to_bits() == v.to_bits()).then_some(m as i64)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
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
    decode_inner(bytes, count)
        .map_err(|e| TsdbError::Corrupt(format!("chunk does not decode: {e}")))
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
            if !r.read_bit()? {
                let sig = 64 - leading - trailing;
                v ^= r.read_var::<u64>(sig)? << trailing;
            } else if !r.read_bit()? {
                leading = u32::from(r.read_var::<u8>(5)?);
                let mut sig = u32::from(r.read_var::<u8>(6)?);
                if sig == 0 {
                    sig = 64;
                }
                if leading + sig > 64 {
                    return Err(std::io::Error::other("xor window exceeds 64 bits"));
                }
                trailing = 64 - leading - sig;
                v ^= r.read_var::<u64>(sig)? << trailing;
            } else {
                let n = u32::from(r.read_var::<u8>(6)?);
                let zz = if n == 0 { 0 } else { r.read_var::<u64>(n)? };
                let (pm, e) = decimal(f64::from_bits(v)).ok_or_else(|| {
                    std::io::Error::other("decimal delta after a non-decimal value")
                })?;
                let m = pm
                    .checked_add(unzigzag(zz))
                    .ok_or_else(|| std::io::Error::other("decimal delta overflows"))?;
                v = (m as f64 / POW10[usize::from(e)]).to_bits();
            }
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
    fn codec_decimal_values_round_trip_exactly() {
        let mut samples = Vec::new();
        let mut ns: i64 = 123_456_789_012;
        let mut centi: i64 = 1_234_567;
        for i in 0..CHUNK_SAMPLES as i64 {
            ns += 1_000_000_007 * (i % 5) + 13;
            centi += 37 * (i % 3);
            let v = match i % 6 {
                0 => ns as f64 / 1e9,
                1 => centi as f64 / 100.0,
                2 => -0.0,
                3 => 9_007_199_254_740_991.0 - i as f64,
                4 => -(centi as f64) / 1000.0,
                _ => 0.1 + 0.2,
            };
            samples.push((i * 10_000, v));
        }
        assert!(same(&round_trip(&samples), &samples));
        // A plain nanosecond counter, value by value.
        let counter: Vec<(i64, f64)> = (0..CHUNK_SAMPLES as i64)
            .map(|i| (i * 10_000, (5_000_000_000 + i * 987_654_321) as f64 / 1e9))
            .collect();
        assert!(same(&round_trip(&counter), &counter));
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
    fn codec_busy_node_series_stay_compact() {
        // Busy series (every sample changes): a tick counter that grows by a random amount and a
        // page-granular gauge that wanders, sampled every 10 s
        // with a few ms of jitter, as the agents ship them.
        let mut total_bytes = 0usize;
        let mut total_samples = 0usize;
        // /proc/stat counts ticks of 1/100 s; the agent divides by 100.
        let mut ticks = 100_000i64;
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
                    ticks += (rnd() * 200.0) as i64;
                    ticks as f64 / 100.0
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
        assert!(per_sample <= 3.5, "{per_sample} bytes per sample");
    }
}
