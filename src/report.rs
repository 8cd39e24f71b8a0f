//! How `surveyor discover` prints a survey: a table for people, JSON or
//! YAML (`{"node": ..., "interfaces": [...]}`) for programs.

use std::fmt::Write as _;

use serde::Serialize;

use crate::inventory::{Interface, Protocol, neighbor_label};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot encode the survey as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode the survey as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// The document `discover -o json|yaml` prints.
#[derive(Debug, Serialize)]
pub struct Survey<'a> {
    pub node: &'a str,
    pub interfaces: &'a [Interface],
}

pub fn render(format: Format, survey: &Survey<'_>) -> Result<String, ReportError> {
    Ok(match format {
        Format::Table => table(survey.interfaces),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(survey)?;
            s.push('\n');
            s
        }
        Format::Yaml => serde_saphyr::to_string(survey)?,
    })
}

/// `25G`, `100M`: link speeds the way switch people say them.
pub fn speed(mbps: u32) -> String {
    if mbps >= 1000 && mbps % 1000 == 0 {
        format!("{}G", mbps / 1000)
    } else {
        format!("{mbps}M")
    }
}

/// The ADDRESS cell: the first address, and how many more there are.
fn first_address(i: &Interface) -> String {
    match i.addresses.as_slice() {
        [] => "-".to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (+{})", rest.len()),
    }
}

/// An aligned table. The ADDRESS column appears once any interface has an
/// address, the NEIGHBOR column once any has a neighbor.
pub fn table(interfaces: &[Interface]) -> String {
    let with_address = interfaces.iter().any(|i| !i.addresses.is_empty());
    let with_neighbor = interfaces.iter().any(|i| i.lldp.is_some());
    let mut header = vec![
        "NAME", "KIND", "STATE", "CARRIER", "MAC", "MTU", "SPEED", "DRIVER", "MASTER",
    ];
    if with_address {
        header.push("ADDRESS");
    }
    if with_neighbor {
        header.push("NEIGHBOR");
    }
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = interfaces
        .iter()
        .map(|i| {
            let mut row = vec![
                i.name.clone(),
                i.kind.to_string(),
                i.oper_state.to_string(),
                if i.carrier { "yes" } else { "no" }.to_string(),
                i.mac.clone().unwrap_or_else(dash),
                i.mtu.to_string(),
                i.speed_mbps.map(speed).unwrap_or_else(dash),
                i.driver.clone().unwrap_or_else(dash),
                i.master.clone().unwrap_or_else(dash),
            ];
            if with_address {
                row.push(first_address(i));
            }
            if with_neighbor {
                // LLDP's plain, another protocol's named.
                row.push(i.lldp.as_ref().map_or_else(dash, |n| match n.protocol {
                    Protocol::Lldp => neighbor_label(n),
                    p => format!("{} ({p})", neighbor_label(n)),
                }));
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (n, (cell, w)) in cells.zip(&widths).enumerate() {
            if n > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{LinkKind, OperState};

    fn ens4() -> Interface {
        let mut i = Interface::new("ens4", 2, LinkKind::Physical);
        i.mac = Some("52:54:00:aa:bb:01".into());
        i.oper_state = OperState::Up;
        i.carrier = true;
        i.mtu = 1500;
        i.speed_mbps = Some(25000);
        i.driver = Some("ixgbe".into());
        i
    }

    #[test]
    fn table_aligns_and_dashes_unknowns() {
        let t = table(&[
            ens4(),
            Interface::new("sv-long-name", 9, LinkKind::from("veth")),
        ]);
        let expected = "\
NAME          KIND      STATE    CARRIER  MAC                MTU   SPEED  DRIVER  MASTER
ens4          physical  up       yes      52:54:00:aa:bb:01  1500  25G    ixgbe   -
sv-long-name  veth      unknown  no       -                  0     -      -       -
";
        assert_eq!(t, expected);

        let mut addressed = ens4();
        addressed.addresses = vec![
            "192.0.2.10/24".parse().unwrap(),
            "2001:db8::10/64".parse().unwrap(),
        ];
        let t = table(&[addressed]);
        assert!(
            t.lines().next().unwrap().ends_with("MASTER  ADDRESS"),
            "{t}"
        );
        assert!(t.contains("192.0.2.10/24 (+1)"), "{t}");
    }

    #[test]
    fn json_has_node_and_interfaces() {
        let ifaces = [ens4()];
        let out = render(
            Format::Json,
            &Survey {
                node: "n1",
                interfaces: &ifaces,
            },
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["node"], "n1");
        assert_eq!(v["interfaces"][0]["speedMbps"], 25000);
        let empty = render(
            Format::Json,
            &Survey {
                node: "n1",
                interfaces: &[],
            },
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&empty).unwrap();
        assert_eq!(v["interfaces"], serde_json::json!([]));
    }

    #[test]
    fn yaml_round_trips() {
        let ifaces = [ens4()];
        let out = render(
            Format::Yaml,
            &Survey {
                node: "n1",
                interfaces: &ifaces,
            },
        )
        .unwrap();
        #[derive(serde::Deserialize)]
        struct Doc {
            node: String,
            interfaces: Vec<Interface>,
        }
        let doc: Doc = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(doc.node, "n1");
        assert_eq!(doc.interfaces, ifaces);
    }

    #[test]
    fn speeds_read_like_switch_ports() {
        assert_eq!(speed(100), "100M");
        assert_eq!(speed(10000), "10G");
        assert_eq!(speed(2500), "2500M");
    }
}
