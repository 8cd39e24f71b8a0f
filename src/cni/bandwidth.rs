//! What an attachment's traffic is held to (pure): the CNI `bandwidth`
//! capability (`runtimeConfig.bandwidth`), checked; a DRA claim's share;
//! the lower of the two for each direction; and the token bucket each
//! shaped direction gets.
//!
//! Directions are the pod's: egress leaves the pod for the network,
//! ingress comes from the network into the pod. Rates are bits per second
//! and bursts bits, as the capability has them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest value taken (the issue of the capability's users: Go's
/// int64 and uint64 both reach further than any link).
pub const MAX_VALUE: u64 = 1 << 63;

/// The least rate shaped: tbf counts whole bytes per second.
pub const MIN_RATE: u64 = 8;

/// A burst this large or larger is what runtimes send when the pod gave
/// no burst (containerd 2^32-1 bits, CRI-O 2^35-1): a bucket that lets a
/// pod run unshaped for seconds. It is taken as "no burst given" and the
/// default is used.
pub const UNSPECIFIED_BURST: u64 = u32::MAX as u64;

/// The default burst: this long at the rate, and at least one full GSO
/// packet (64 KiB), below which tbf splits what TCP hands it. Measured
/// (benches/shaping.rs): 2 ms keeps TCP within 5% of the rate up to
/// 5 Gbit/s where 64 KiB alone falls to 86%.
pub const DEFAULT_BURST_MS: u64 = 2;
pub const MIN_DEFAULT_BURST_BYTES: u64 = 64 * 1024;

/// How long packets may queue behind the bucket before tbf drops them
/// (its `latency`): the queue is this long at the rate, plus the burst.
pub const QUEUE_MS: u64 = 25;

/// The bytes of one frame's header beyond the MTU (Ethernet, no VLAN):
/// tbf counts frames.
pub const FRAME_HEADER: u64 = 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Egress, Direction::Ingress];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn rate_key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingressRate",
            Direction::Egress => "egressRate",
        }
    }

    fn burst_key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingressBurst",
            Direction::Egress => "egressBurst",
        }
    }
}

/// Where a limit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// The CNI `bandwidth` capability (`runtimeConfig.bandwidth`).
    RuntimeConfig,
    /// The pod's ResourceClaim (DRA).
    Claim,
}

/// What one direction is asked to be held to, before the burst is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked {
    pub rate: u64,
    /// `None`: the default burst.
    pub burst: Option<u64>,
    pub source: Source,
}

/// Both directions, each asked or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub ingress: Option<Asked>,
    pub egress: Option<Asked>,
}

/// One direction's limit, settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limit {
    /// Bits per second.
    pub rate: u64,
    /// Bits.
    pub burst: u64,
    pub source: Source,
}

/// What an attachment is held to: what ADD set up, recorded for CHECK and
/// DEL, and shown to the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Limit>,
}

impl Limits {
    pub fn get(&self, direction: Direction) -> Option<Limit> {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }
}

impl Request {
    pub fn get(&self, direction: Direction) -> Option<Asked> {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }

    fn set(&mut self, direction: Direction, asked: Option<Asked>) {
        match direction {
            Direction::Ingress => self.ingress = asked,
            Direction::Egress => self.egress = asked,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    /// A claim's share, in the directions it is held to.
    pub fn claimed(rate: u64, directions: &[Direction]) -> Request {
        let mut out = Request::default();
        for d in directions {
            out.set(
                *d,
                Some(Asked {
                    rate,
                    burst: None,
                    source: Source::Claim,
                }),
            );
        }
        out
    }

    /// For each direction, the lower of the two rates (with its burst);
    /// on a tie the one with a burst given.
    pub fn lower(self, other: Request) -> Request {
        let mut out = Request::default();
        for d in Direction::BOTH {
            let pick = match (self.get(d), other.get(d)) {
                (Some(a), Some(b)) => Some(
                    if a.rate < b.rate || (a.rate == b.rate && a.burst.is_some()) {
                        a
                    } else {
                        b
                    },
                ),
                (a, b) => a.or(b),
            };
            out.set(d, pick);
        }
        out
    }

    /// The limits, bursts settled for a link of `mtu`: a burst smaller
    /// than one frame would let no frame through.
    pub fn settle(self, mtu: u32) -> Result<Limits, BandwidthError> {
        let frame = u64::from(mtu) + FRAME_HEADER;
        let mut out = Limits::default();
        for d in Direction::BOTH {
            let Some(asked) = self.get(d) else { continue };
            let burst = match asked.burst {
                Some(bits) => {
                    if bits.div_ceil(8) < frame {
                        return Err(BandwidthError::BurstBelowFrame {
                            field: field(d.burst_key()),
                            bits,
                            frame,
                        });
                    }
                    bits
                }
                None => default_burst(asked.rate),
            };
            let limit = Limit {
                rate: asked.rate,
                burst,
                source: asked.source,
            };
            match d {
                Direction::Ingress => out.ingress = Some(limit),
                Direction::Egress => out.egress = Some(limit),
            }
        }
        Ok(out)
    }
}

/// The default burst of `rate`, in bits.
pub fn default_burst(rate: u64) -> u64 {
    let at_rate = rate / 1000 * DEFAULT_BURST_MS;
    at_rate.max(MIN_DEFAULT_BURST_BYTES * 8)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BandwidthError {
    #[error("{field} must be an object, not {found}")]
    NotObject { field: String, found: String },
    #[error("{field} must be a whole number of bits{per}, not {found}")]
    NotWhole {
        field: String,
        per: &'static str,
        found: String,
    },
    #[error("{field} must not be negative ({found})")]
    Negative { field: String, found: String },
    #[error("{field} {found} is over 2^63")]
    TooLarge { field: String, found: String },
    #[error("{field} is {value} bit/s: the least rate shaped is {MIN_RATE} bit/s")]
    RateTooLow { field: String, value: u64 },
    #[error("{burst} is set without {rate}: give {rate} (bits per second) too, or leave both out")]
    BurstWithoutRate { burst: String, rate: String },
    #[error(
        "{rate} is set without {burst}: give {burst} too (bits a pod may send at once above the rate, at least one frame; e.g. {example})"
    )]
    RateWithoutBurst {
        rate: String,
        burst: String,
        example: u64,
    },
    #[error(
        "{field} is {bits} bits, less than one frame of the master device ({frame} bytes, {} bits): no frame could pass",
        frame * 8
    )]
    BurstBelowFrame {
        field: String,
        bits: u64,
        frame: u64,
    },
}

fn field(key: &str) -> String {
    format!("runtimeConfig.bandwidth.{key}")
}

/// The capability's request from the network configuration's
/// `runtimeConfig` (absent: nothing asked). Keys are matched as Go's JSON
/// decoder matches them, whatever their case: containerd sends
/// `IngressRate`, Multus `ingressRate`. A direction with neither key, or
/// both zero (a runtime's way to leave it out), is not shaped.
pub fn requested(runtime_config: Option<&Map<String, Value>>) -> Result<Request, BandwidthError> {
    let Some(bandwidth) = runtime_config.and_then(|r| r.get("bandwidth")) else {
        return Ok(Request::default());
    };
    let bandwidth = match bandwidth {
        Value::Null => return Ok(Request::default()),
        Value::Object(map) => map,
        other => {
            return Err(BandwidthError::NotObject {
                field: "runtimeConfig.bandwidth".into(),
                found: other.to_string(),
            });
        }
    };
    let mut out = Request::default();
    for d in Direction::BOTH {
        let rate = value(bandwidth, d.rate_key())?.unwrap_or(0);
        let burst = value(bandwidth, d.burst_key())?.unwrap_or(0);
        let asked = match (rate, burst) {
            (0, 0) => None,
            (0, _) => {
                return Err(BandwidthError::BurstWithoutRate {
                    burst: field(d.burst_key()),
                    rate: field(d.rate_key()),
                });
            }
            (rate, 0) => {
                return Err(BandwidthError::RateWithoutBurst {
                    rate: field(d.rate_key()),
                    burst: field(d.burst_key()),
                    example: default_burst(rate),
                });
            }
            (rate, _) if rate < MIN_RATE => {
                return Err(BandwidthError::RateTooLow {
                    field: field(d.rate_key()),
                    value: rate,
                });
            }
            (rate, burst) => Some(Asked {
                rate,
                burst: (burst < UNSPECIFIED_BURST).then_some(burst),
                source: Source::RuntimeConfig,
            }),
        };
        out.set(d, asked);
    }
    Ok(out)
}

/// One key's value, its name matched whatever its case; `None` when absent
/// or null.
fn value(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, BandwidthError> {
    // An exact match first: of keys that differ only in case, Go takes
    // the exact one.
    let found = map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    });
    let name = || field(key);
    let per = if key.ends_with("Rate") {
        " per second"
    } else {
        ""
    };
    match found {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                if v > MAX_VALUE {
                    return Err(BandwidthError::TooLarge {
                        field: name(),
                        found: n.to_string(),
                    });
                }
                return Ok(Some(v));
            }
            if n.as_i64().is_some() || n.as_f64().is_some_and(|f| f < 0.0) {
                return Err(BandwidthError::Negative {
                    field: name(),
                    found: n.to_string(),
                });
            }
            // A float: whole and in range is taken (JSON writers print
            // large numbers as 1e+09), anything else refused.
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f <= MAX_VALUE as f64 => Ok(Some(f as u64)),
                Some(f) if f.fract() == 0.0 => Err(BandwidthError::TooLarge {
                    field: name(),
                    found: n.to_string(),
                }),
                _ => Err(BandwidthError::NotWhole {
                    field: name(),
                    per,
                    found: n.to_string(),
                }),
            }
        }
        Some(other) => Err(BandwidthError::NotWhole {
            field: name(),
            per,
            found: other.to_string(),
        }),
    }
}

/// A token bucket as tbf takes it: bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub rate_bytes: u64,
    pub burst_bytes: u32,
    /// Bytes queued at most (the burst and [`QUEUE_MS`] at the rate).
    pub limit_bytes: u32,
}

impl Limit {
    pub fn bucket(&self) -> Bucket {
        let rate_bytes = (self.rate / 8).max(1);
        let burst_bytes = u32::try_from(self.burst.div_ceil(8)).unwrap_or(u32::MAX);
        let queue = rate_bytes.saturating_mul(QUEUE_MS) / 1000;
        let limit = u64::from(burst_bytes).saturating_add(queue);
        Bucket {
            rate_bytes,
            burst_bytes,
            limit_bytes: u32::try_from(limit).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Request, BandwidthError> {
        let Value::Object(rc) = json!({ "bandwidth": v }) else {
            unreachable!()
        };
        requested(Some(&rc))
    }

    fn asked(rate: u64, burst: Option<u64>) -> Option<Asked> {
        Some(Asked {
            rate,
            burst,
            source: Source::RuntimeConfig,
        })
    }

    #[test]
    fn each_direction_is_taken_whatever_the_keys_case() {
        let r = parse(json!({"ingressRate": 300_000_000, "ingressBurst": 400_000,
            "egressRate": 400_000_000, "egressBurst": 800_000}))
        .unwrap();
        assert_eq!(r.ingress, asked(300_000_000, Some(400_000)));
        assert_eq!(r.egress, asked(400_000_000, Some(800_000)));
        // containerd: Go field names, zeros for the direction not given,
        // 2^32-1 for "no burst".
        let r = parse(json!({"IngressRate": 0, "IngressBurst": 0,
            "EgressRate": 100_000_000u64, "EgressBurst": 4_294_967_295u64}))
        .unwrap();
        assert_eq!((r.ingress, r.egress), (None, asked(100_000_000, None)));
        // CRI-O's 2^35-1, and a float as JSON writers print big numbers.
        let r = parse(json!({"egressRate": 1e9, "egressBurst": 34_359_738_367u64})).unwrap();
        assert_eq!(r.egress, asked(1_000_000_000, None));
        // An exact key wins over one that differs in case.
        let r = parse(json!({"EGRESSRATE": 5, "egressRate": 1000, "egressBurst": 20000})).unwrap();
        assert_eq!(r.egress, asked(1000, Some(20000)));
        for nothing in [json!({}), json!(null), json!({"ingressRate": null})] {
            assert!(parse(nothing.clone()).unwrap().is_empty(), "{nothing}");
        }
        assert!(requested(None).unwrap().is_empty());
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let cases = [
            (
                json!({"egressRate": -1, "egressBurst": 100}),
                "egressRate",
                "negative",
            ),
            (
                json!({"egressRate": 1000, "egressBurst": -2.5}),
                "egressBurst",
                "negative",
            ),
            (
                json!({"ingressRate": 1.5, "ingressBurst": 100}),
                "ingressRate",
                "whole number of bits per second",
            ),
            (
                json!({"ingressRate": "1G", "ingressBurst": 100}),
                "ingressRate",
                "whole number",
            ),
            (
                json!({"ingressRate": 9_300_000_000_000_000_000u64, "ingressBurst": 100}),
                "ingressRate",
                "2^63",
            ),
            (
                json!({"ingressRate": 1e30, "ingressBurst": 100}),
                "ingressRate",
                "2^63",
            ),
            (
                json!({"egressRate": 1000}),
                "egressRate is set without runtimeConfig.bandwidth.egressBurst",
                "e.g. 524288",
            ),
            (
                json!({"egressRate": 1000, "egressBurst": 0}),
                "egressBurst",
                "without",
            ),
            (
                json!({"ingressBurst": 1000}),
                "ingressBurst is set without",
                "ingressRate",
            ),
            (
                json!({"ingressRate": 0, "ingressBurst": 1000}),
                "ingressBurst",
                "ingressRate",
            ),
            (
                json!({"egressRate": 7, "egressBurst": 100_000}),
                "egressRate",
                "least rate",
            ),
            (json!([1, 2]), "runtimeConfig.bandwidth", "object"),
        ];
        for (value, a, b) in cases {
            let e = parse(value.clone()).unwrap_err().to_string();
            assert!(e.contains(a) && e.contains(b), "{value}: {e}");
        }
        // A burst below one frame of the master, known only at ADD.
        let r = parse(json!({"egressRate": 1_000_000, "egressBurst": 8000})).unwrap();
        let e = r.settle(1500).unwrap_err().to_string();
        assert!(
            e.contains("egressBurst is 8000 bits") && e.contains("1514 bytes"),
            "{e}"
        );
        assert!(r.settle(900).is_ok());
    }

    #[test]
    fn the_lower_rate_wins_per_direction_and_claims_get_the_default_burst() {
        let rc = parse(json!({"egressRate": 400_000_000, "egressBurst": 1_000_000,
            "ingressRate": 9_000_000_000u64, "ingressBurst": 1_000_000}))
        .unwrap();
        let claim = Request::claimed(2_000_000_000, &Direction::BOTH);
        let l = rc.lower(claim).settle(1500).unwrap();
        assert_eq!(
            l.egress,
            Some(Limit {
                rate: 400_000_000,
                burst: 1_000_000,
                source: Source::RuntimeConfig
            })
        );
        assert_eq!(
            l.ingress,
            Some(Limit {
                rate: 2_000_000_000,
                burst: 4_000_000,
                source: Source::Claim
            })
        );
        // A claim held to egress only leaves ingress to the capability.
        let only = Request::claimed(100_000_000, &[Direction::Egress]);
        let l = Request::default().lower(only).settle(1500).unwrap();
        assert_eq!(l.ingress, None);
        assert_eq!(l.egress.map(|e| e.burst), Some(64 * 1024 * 8));
        // A tie goes to the one with a burst.
        let tie = Request::claimed(400_000_000, &Direction::BOTH);
        assert_eq!(tie.lower(rc).egress.and_then(|e| e.burst), Some(1_000_000));
    }

    #[test]
    fn buckets_are_bytes_with_a_queue_of_25_ms() {
        let l = Limit {
            rate: 1_000_000_000,
            burst: 2_000_001,
            source: Source::Claim,
        };
        assert_eq!(
            l.bucket(),
            Bucket {
                rate_bytes: 125_000_000,
                burst_bytes: 250_001,
                limit_bytes: 250_001 + 3_125_000
            }
        );
        let huge = Limit {
            rate: MAX_VALUE,
            burst: UNSPECIFIED_BURST - 1,
            source: Source::RuntimeConfig,
        };
        let b = huge.bucket();
        assert_eq!((b.rate_bytes, b.limit_bytes), (MAX_VALUE / 8, u32::MAX));
    }

    #[test]
    fn limits_round_trip_through_the_cache() {
        let l = Request::claimed(1_000_000_000, &[Direction::Ingress])
            .settle(1500)
            .unwrap();
        let v = serde_json::to_value(l).unwrap();
        assert_eq!(
            v,
            json!({"ingress": {"rate": 1_000_000_000u64, "burst": 2_000_000, "source": "claim"}})
        );
        assert_eq!(serde_json::from_value::<Limits>(v).unwrap(), l);
    }
}
