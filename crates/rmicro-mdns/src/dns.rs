//! The part of the DNS wire format (RFC 1035) that mDNS service discovery uses:
//! questions and PTR, SRV, TXT, A and AAAA records. Decoding follows compression
//! pointers and rejects malformed packets with an error; encoding writes names
//! uncompressed.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Record types.
pub const TYPE_A: u16 = 1;
/// Domain name pointer.
pub const TYPE_PTR: u16 = 12;
/// Text strings.
pub const TYPE_TXT: u16 = 16;
/// IPv6 address.
pub const TYPE_AAAA: u16 = 28;
/// Service location.
pub const TYPE_SRV: u16 = 33;
/// Any type (queries only).
pub const TYPE_ANY: u16 = 255;
/// The Internet class.
pub const CLASS_IN: u16 = 1;
/// In a question: "unicast response wanted"; in a record: "cache flush".
pub const CLASS_TOP_BIT: u16 = 0x8000;
/// The header flag marking a response.
pub const FLAG_RESPONSE: u16 = 0x8000;
/// The header flag marking an authoritative answer.
pub const FLAG_AUTHORITATIVE: u16 = 0x0400;

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed DNS packet: {0}")]
pub struct DnsError(pub &'static str);

/// A question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name asked about, with a trailing dot.
    pub name: String,
    /// The record type asked for.
    pub qtype: u16,
    /// The class, possibly with [`CLASS_TOP_BIT`] (unicast response wanted).
    pub qclass: u16,
}

/// A record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A pointer to another name.
    Ptr(String),
    /// A service location.
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// The host name.
        target: String,
    },
    /// Character strings.
    Txt(Vec<Vec<u8>>),
    /// Any other type, undecoded.
    Other(Vec<u8>),
}

/// A resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner name, with a trailing dot.
    pub name: String,
    /// The record type.
    pub rtype: u16,
    /// The class, possibly with [`CLASS_TOP_BIT`] (cache flush).
    pub class: u16,
    /// Time to live in seconds; 0 announces that the record is gone.
    pub ttl: u32,
    /// The data.
    pub data: RData,
}

impl Record {
    /// A record of `data`'s type in class IN.
    pub fn new(name: &str, ttl: u32, data: RData) -> Self {
        let rtype = match &data {
            RData::A(_) => TYPE_A,
            RData::Aaaa(_) => TYPE_AAAA,
            RData::Ptr(_) => TYPE_PTR,
            RData::Srv { .. } => TYPE_SRV,
            RData::Txt(_) => TYPE_TXT,
            RData::Other(_) => 0,
        };
        Record {
            name: name.to_owned(),
            rtype,
            class: CLASS_IN,
            ttl,
            data,
        }
    }
}

/// A DNS message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The id (0 for multicast queries; echoed in legacy unicast replies).
    pub id: u16,
    /// Header flags.
    pub flags: u16,
    /// Questions.
    pub questions: Vec<Question>,
    /// Answers.
    pub answers: Vec<Record>,
    /// Additional records.
    pub additionals: Vec<Record>,
}

impl Message {
    /// Whether this is a response.
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    /// Answers and additional records together.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.answers.iter().chain(&self.additionals)
    }

    /// Encodes the message; fails only for names or strings too long for DNS.
    pub fn encode(&self) -> Result<Vec<u8>, DnsError> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for count in [
            self.questions.len(),
            self.answers.len(),
            0,
            self.additionals.len(),
        ] {
            let count = u16::try_from(count).map_err(|_| DnsError("too many records"))?;
            out.extend_from_slice(&count.to_be_bytes());
        }
        for q in &self.questions {
            write_name(&mut out, &q.name)?;
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
        }
        for r in self.answers.iter().chain(&self.additionals) {
            write_name(&mut out, &r.name)?;
            out.extend_from_slice(&r.rtype.to_be_bytes());
            out.extend_from_slice(&r.class.to_be_bytes());
            out.extend_from_slice(&r.ttl.to_be_bytes());
            let mut data = Vec::new();
            match &r.data {
                RData::A(ip) => data.extend_from_slice(&ip.octets()),
                RData::Aaaa(ip) => data.extend_from_slice(&ip.octets()),
                RData::Ptr(name) => write_name(&mut data, name)?,
                RData::Srv {
                    priority,
                    weight,
                    port,
                    target,
                } => {
                    data.extend_from_slice(&priority.to_be_bytes());
                    data.extend_from_slice(&weight.to_be_bytes());
                    data.extend_from_slice(&port.to_be_bytes());
                    write_name(&mut data, target)?;
                }
                RData::Txt(strings) => {
                    for s in strings {
                        let len = u8::try_from(s.len())
                            .map_err(|_| DnsError("TXT string over 255 bytes"))?;
                        data.push(len);
                        data.extend_from_slice(s);
                    }
                    if strings.is_empty() {
                        data.push(0);
                    }
                }
                RData::Other(bytes) => data.extend_from_slice(bytes),
            }
            let len = u16::try_from(data.len()).map_err(|_| DnsError("record too long"))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// Decodes a packet.
    pub fn decode(packet: &[u8]) -> Result<Message, DnsError> {
        let mut reader = Reader { packet, pos: 0 };
        let id = reader.u16()?;
        let flags = reader.u16()?;
        let questions = reader.u16()?;
        let answers = reader.u16()?;
        let authorities = reader.u16()?;
        let additionals = reader.u16()?;
        let mut message = Message {
            id,
            flags,
            ..Default::default()
        };
        for _ in 0..questions {
            let name = reader.name()?;
            message.questions.push(Question {
                name,
                qtype: reader.u16()?,
                qclass: reader.u16()?,
            });
        }
        for _ in 0..answers {
            message.answers.push(reader.record()?);
        }
        for _ in 0..authorities {
            reader.record()?;
        }
        for _ in 0..additionals {
            message.additionals.push(reader.record()?);
        }
        Ok(message)
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) -> Result<(), DnsError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let start = out.len();
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|l| (1..=63).contains(l))
                .ok_or(DnsError("a name label must be 1 to 63 bytes"))?;
            out.push(len);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > 255 {
        return Err(DnsError("name over 255 bytes"));
    }
    Ok(())
}

struct Reader<'a> {
    packet: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DnsError> {
        let end = self.pos.checked_add(n).ok_or(DnsError("length overflow"))?;
        let bytes = self
            .packet
            .get(self.pos..end)
            .ok_or(DnsError("truncated"))?;
        self.pos = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DnsError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a name at the current position, following compression pointers.
    fn name(&mut self) -> Result<String, DnsError> {
        let (name, end) = read_name(self.packet, self.pos)?;
        self.pos = end;
        Ok(name)
    }

    fn record(&mut self) -> Result<Record, DnsError> {
        let name = self.name()?;
        let rtype = self.u16()?;
        let class = self.u16()?;
        let ttl = self.u32()?;
        let len = usize::from(self.u16()?);
        let start = self.pos;
        let raw = self.take(len)?;
        let data = match rtype {
            TYPE_A => RData::A(Ipv4Addr::from(
                <[u8; 4]>::try_from(raw).map_err(|_| DnsError("A record is not 4 bytes"))?,
            )),
            TYPE_AAAA => RData::Aaaa(Ipv6Addr::from(
                <[u8; 16]>::try_from(raw).map_err(|_| DnsError("AAAA record is not 16 bytes"))?,
            )),
            TYPE_PTR => RData::Ptr(read_name(self.packet, start)?.0),
            TYPE_SRV => {
                if raw.len() < 7 {
                    return Err(DnsError("SRV record too short"));
                }
                RData::Srv {
                    priority: u16::from_be_bytes([raw[0], raw[1]]),
                    weight: u16::from_be_bytes([raw[2], raw[3]]),
                    port: u16::from_be_bytes([raw[4], raw[5]]),
                    target: read_name(self.packet, start + 6)?.0,
                }
            }
            TYPE_TXT => {
                let mut strings = Vec::new();
                let mut rest = raw;
                while let Some((&len, tail)) = rest.split_first() {
                    let len = usize::from(len);
                    if tail.len() < len {
                        return Err(DnsError("TXT string runs past its record"));
                    }
                    strings.push(tail[..len].to_vec());
                    rest = &tail[len..];
                }
                RData::Txt(strings)
            }
            _ => RData::Other(raw.to_vec()),
        };
        Ok(Record {
            name,
            rtype,
            class,
            ttl,
            data,
        })
    }
}

/// Reads a (possibly compressed) name starting at `pos`; returns it with a trailing
/// dot and the position just after it.
fn read_name(packet: &[u8], mut pos: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *packet.get(pos).ok_or(DnsError("truncated name"))?;
        match len {
            0 => {
                pos += 1;
                break;
            }
            l if l & 0xc0 == 0xc0 => {
                let low = *packet.get(pos + 1).ok_or(DnsError("truncated pointer"))?;
                end.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > 32 {
                    return Err(DnsError("compression pointer loop"));
                }
                pos = usize::from(u16::from_be_bytes([l & 0x3f, low]));
            }
            l if l & 0xc0 != 0 => return Err(DnsError("unknown label type")),
            l => {
                let label = packet
                    .get(pos + 1..pos + 1 + usize::from(l))
                    .ok_or(DnsError("truncated label"))?;
                name.push_str(&String::from_utf8_lossy(label));
                name.push('.');
                if name.len() > 255 {
                    return Err(DnsError("name over 255 bytes"));
                }
                pos += 1 + usize::from(l);
            }
        }
    }
    if name.is_empty() {
        name.push('.');
    }
    Ok((name, end.unwrap_or(pos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_record_type() {
        let message = Message {
            id: 7,
            flags: FLAG_RESPONSE | FLAG_AUTHORITATIVE,
            questions: vec![Question {
                name: "greeter.micro.".into(),
                qtype: TYPE_PTR,
                qclass: CLASS_IN,
            }],
            answers: vec![
                Record::new(
                    "greeter.micro.",
                    120,
                    RData::Ptr("n1.greeter.micro.".into()),
                ),
                Record::new(
                    "n1.greeter.micro.",
                    120,
                    RData::Srv {
                        priority: 10,
                        weight: 1,
                        port: 9000,
                        target: "n1.greeter.micro.".into(),
                    },
                ),
                Record::new(
                    "n1.greeter.micro.",
                    120,
                    RData::Txt(vec![b"ab".to_vec(), vec![]]),
                ),
            ],
            additionals: vec![
                Record::new(
                    "n1.greeter.micro.",
                    120,
                    RData::A(Ipv4Addr::new(10, 0, 0, 1)),
                ),
                Record::new("n1.greeter.micro.", 120, RData::Aaaa(Ipv6Addr::LOCALHOST)),
            ],
        };
        let bytes = message.encode().unwrap();
        assert_eq!(Message::decode(&bytes).unwrap(), message);
    }

    #[test]
    fn follows_compression_pointers() {
        // Header, one answer: name "a.micro." then a PTR whose data points back at it.
        let mut packet = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        packet.extend_from_slice(b"\x01a\x05micro\x00");
        packet.extend_from_slice(&[0, 12, 0, 1, 0, 0, 0, 120, 0, 4]);
        packet.extend_from_slice(b"\x01b\xc0\x0c");
        let message = Message::decode(&packet).unwrap();
        assert_eq!(message.answers[0].data, RData::Ptr("b.a.micro.".into()));
    }

    #[test]
    fn rejects_malformed_packets() {
        assert!(Message::decode(&[0; 5]).is_err(), "short header");
        // A pointer to itself.
        let mut looped = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1]);
        assert_eq!(
            Message::decode(&looped),
            Err(DnsError("compression pointer loop"))
        );
        // A label running past the end.
        let mut truncated = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        truncated.extend_from_slice(b"\x09abc");
        assert!(Message::decode(&truncated).is_err());
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = Message::decode(&garbage);
        }
    }

    #[test]
    fn refuses_to_encode_oversized_labels() {
        let message = Message {
            questions: vec![Question {
                name: format!("{}.micro.", "x".repeat(64)),
                qtype: TYPE_PTR,
                qclass: CLASS_IN,
            }],
            ..Default::default()
        };
        assert!(message.encode().is_err());
    }
}
