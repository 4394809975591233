//! A minimal reader of the protobuf wire format.

use crate::ProtobufError;

/// One decoded field value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    /// A 32-bit value; no Kubernetes field uses one, so it is skipped.
    Fixed32,
    Bytes(&'a [u8]),
}

fn err(message: &str) -> ProtobufError {
    ProtobufError::Decode(message.to_string())
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| err("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(err("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| err("truncated field"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next field's tag and value, or `None` at the end of the buffer. Groups
    /// (deprecated, never used by Kubernetes) are rejected.
    pub fn next_field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, ProtobufError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| err("field tag out of range"))?;
        if tag == 0 {
            return Err(err("field tag 0"));
        }
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                WireValue::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| err("length too large"))?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                WireValue::Fixed32
            }
            other => {
                return Err(ProtobufError::Decode(format!(
                    "unsupported wire type {other}"
                )))
            }
        };
        Ok(Some((tag, value)))
    }
}

/// Reads the varints of a packed repeated field.
pub fn packed_varints(bytes: &[u8]) -> Result<Vec<u64>, ProtobufError> {
    let mut reader = Reader::new(bytes);
    let mut out = Vec::new();
    while reader.pos < bytes.len() {
        out.push(reader.varint()?);
    }
    Ok(out)
}
