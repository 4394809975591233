//! Gorilla-class chunk codec: delta-of-delta timestamps and XOR-compressed floats, bit-packed with
//! `bitstream-io` (the layout of Facebook's Gorilla paper; timestamp buckets of 7/14/20/64 bits tuned
//! for millisecond jitter on a regular interval), plus a decimal value mode: when both values are
//! exactly `m / 10^e` (counters in 1/100 s, nanoseconds as seconds, byte counts), the change of `m` —
//! or, for counters with a steady rate, the change of that change — is written instead of the XOR
//! whenever that is shorter, in a bit width that is reused until a wider one is needed — lossless,
//! checked bit for bit.

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
    /// The last step of the decimal mantissa (exponent, change), when the last two values had one.
    step: Option<(u8, i64)>,
    /// The bit width the last decimal value was written in (reused while changes fit).
    width: Option<u8>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An encoder whose buffer holds `bytes` without growing: the head state re-encodes each
    /// open chunk at load into exactly the bytes it had, in one allocation instead of a run of
    /// doublings that each leave a freed block behind.
    pub fn with_capacity(bytes: usize) -> Self {
        ChunkEncoder {
            bits: BitRecorder::with_capacity(bytes),
            count: 0,
            min_t: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
            step: None,
            width: None,
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
        let prev = f64::from_bits(self.v);
        let base = decimal_base(prev, self.step);
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
            // Decimal: both values are m / 10^e; the change of m, or the change of that change.
            let dec = base.and_then(|(e, pm, last)| {
                let m = exact_mantissa(f64::from_bits(v), e)?;
                let change = m.checked_sub(pm)?;
                let by_change = (false, zigzag(change));
                let best = match last.and_then(|l| change.checked_sub(l)) {
                    Some(dod) if zigzag(dod) < by_change.1 => (true, zigzag(dod)),
                    _ => by_change,
                };
                let n = 64 - best.1.leading_zeros();
                (n <= 63).then_some((best.0, best.1, n))
            });
            let dec = dec.map(|(of_change, zz, n)| {
                let reuse = self.width.filter(|&w| u32::from(w) >= n);
                let cost = match reuse {
                    Some(w) if 5 + u32::from(w) <= 11 + n => 5 + u32::from(w),
                    _ => 11 + n,
                };
                (
                    of_change,
                    zz,
                    n,
                    reuse.filter(|&w| 5 + u32::from(w) <= 11 + n),
                    cost,
                )
            });
            match dec {
                Some((of_change, zz, n, reuse_width, cost)) if cost < xor_cost => {
                    w.write_var::<u8>(3, 0b111)?;
                    w.write_bit(of_change)?;
                    match reuse_width {
                        Some(width) => {
                            w.write_bit(false)?;
                            w.write_var::<u64>(u32::from(width), zz)?;
                        }
                        None => {
                            w.write_bit(true)?;
                            w.write_var::<u8>(6, n as u8)?;
                            w.write_var::<u64>(n, zz)?;
                            self.width = Some(n as u8);
                        }
                    }
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
        self.step = next_step(base, f64::from_bits(v));
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

/// What a decimal value after `prev` is written against: the exponent (`prev`'s own, or the
/// previous step's when that is finer), `prev`'s mantissa at it, and the previous step's change
/// scaled to it (for a change of the change).
fn decimal_base(prev: f64, step: Option<(u8, i64)>) -> Option<(u8, i64, Option<i64>)> {
    if let Some((se, change)) = step {
        // the common case, one multiplication: `prev` has the step's resolution (then its own
        // smallest exponent is no larger)
        if let Some(spm) = exact_mantissa(prev, se) {
            return Some((se, spm, Some(change)));
        }
    }
    let (pm, e) = decimal(prev)?;
    if let Some((se, change)) = step {
        if se < e {
            let scaled = 10i64
                .checked_pow(u32::from(e - se))
                .and_then(|f| change.checked_mul(f));
            return Some((e, pm, scaled));
        }
    }
    Some((e, pm, None))
}

/// The decimal step to `cur` from the base of the value before it (both sides of the codec keep
/// it the same way).
fn next_step(base: Option<(u8, i64, Option<i64>)>, cur: f64) -> Option<(u8, i64)> {
    let (e, pm, _) = base?;
    let m = exact_mantissa(cur, e)?;
    Some((e, m.checked_sub(pm)?))
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
    let mut step: Option<(u8, i64)> = None;
    let mut width: Option<u8> = None;
    for _ in 1..count {
        let base = decimal_base(f64::from_bits(v), step);
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
                let of_change = r.read_bit()?;
                let n = if r.read_bit()? {
                    let n = r.read_var::<u8>(6)?;
                    width = Some(n);
                    u32::from(n)
                } else {
                    u32::from(width.ok_or_else(|| {
                        std::io::Error::other("decimal value reuses a width never written")
                    })?)
                };
                let zz = if n == 0 { 0 } else { r.read_var::<u64>(n)? };
                let (e, pm, last) = base.ok_or_else(|| {
                    std::io::Error::other("decimal value after a non-decimal value")
                })?;
                let change = if of_change {
                    last.ok_or_else(|| std::io::Error::other("change of a change without a step"))?
                        .checked_add(unzigzag(zz))
                } else {
                    Some(unzigzag(zz))
                };
                let m = change
                    .and_then(|c| pm.checked_add(c))
                    .ok_or_else(|| std::io::Error::other("decimal value overflows"))?;
                v = (m as f64 / POW10[usize::from(e)]).to_bits();
            }
        }
        step = next_step(base, f64::from_bits(v));
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
    fn codec_mixed_resolutions_round_trip_exactly() {
        // values hopping between resolutions, non-decimal values, huge and negative ones: every
        // mode switch of the decimal coding must still give back the values bit for bit
        let mut seed = 7u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut v = 1000.0f64;
        let mut samples = Vec::new();
        for i in 0..2_000i64 {
            v = match rnd() % 9 {
                0 => v + (rnd() % 100) as f64,
                1 => ((v * 100.0).round() + (rnd() % 50) as f64) / 100.0,
                2 => ((v * 1e6).round() + (rnd() % 5_000) as f64) / 1e6,
                3 => v / 3.0,
                4 => -v,
                5 => 9_007_199_254_740_000.0 + (rnd() % 900) as f64,
                6 => 0.0,
                7 => v,
                _ => (rnd() % 1_000_000) as f64 * 4096.0,
            };
            samples.push((i * 10_000, v));
        }
        for chunk in samples.chunks(usize::from(CHUNK_SAMPLES)) {
            assert!(same(&round_trip(chunk), chunk));
        }
    }

    #[test]
    fn codec_steady_counter_writes_the_change_of_its_change() {
        // a nanosecond CPU counter (as seconds) advancing ~0.25 s per 10 s with a little noise:
        // the change of the change is far smaller than the change itself
        let mut enc = ChunkEncoder::new();
        let mut ns = 1_234_567_890_123i64;
        let mut seed = 3u64;
        for i in 0..i64::from(CHUNK_SAMPLES) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ns += 250_000_000 + (seed % 20_000) as i64;
            enc.push(i * 10_000, ns as f64 / 1e9);
        }
        let per_sample = enc.byte_len() as f64 / f64::from(enc.len());
        // the change alone needs 29 bits; its change fits in 16
        assert!(per_sample < 3.0, "{per_sample} bytes per sample");
        let decoded = decode(&enc.bytes(), enc.len()).unwrap();
        assert_eq!(decoded.len(), usize::from(CHUNK_SAMPLES));
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
