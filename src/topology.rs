//! The fabric as LLDP sees it, pure: switches (by LLDP system name, else
//! chassis ID) and their ports, the node interfaces cabled to them, and
//! the semantic networks each interface serves; rendered as one
//! self-contained SVG, Graphviz DOT or JSON.
//!
//! The SVG is a patch panel rather than a hairball: switches in one row
//! as columns, one row per node below, each interface in the column of
//! the switch it is cabled to, labelled with the switch port, on the
//! switch's bus line. At 50 nodes x 4 switches x 4 NICs nothing crosses
//! or overlaps, and the height grows with the nodes only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::crd::NodeSurveyStatus;

/// What the topology needs of one node: little, so a controller watching
/// thousands of NodeSurveys keeps only this of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub interfaces: Vec<IfaceView>,
    /// Maps selecting this node that have no device on it.
    pub unresolved: Vec<String>,
    /// Whether the node has a NodeSurvey (an agent) at all.
    pub surveyed: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfaceView {
    pub name: String,
    pub up: bool,
    pub networks: Vec<String>,
    pub neighbor: Option<NeighborView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeighborView {
    pub system_name: Option<String>,
    pub chassis_id: String,
    pub port_id: String,
}

impl NodeView {
    /// The view of a NodeSurvey's status. Networks the node's agent says
    /// select it but have no device are unresolved.
    pub fn of(name: &str, status: &NodeSurveyStatus) -> NodeView {
        NodeView {
            name: name.to_string(),
            interfaces: status
                .interfaces
                .iter()
                .map(|i| IfaceView {
                    name: i.name.clone(),
                    up: i.is_up(),
                    networks: i.networks.clone(),
                    neighbor: i.lldp.as_ref().map(|n| NeighborView {
                        system_name: n.system_name.clone(),
                        chassis_id: n.chassis_id.value.clone(),
                        port_id: n.port_id.value.clone(),
                    }),
                })
                .collect(),
            unresolved: status
                .networks
                .iter()
                .filter(|(_, n)| n.selected && n.device.is_none())
                .map(|(name, _)| name.clone())
                .collect(),
            surveyed: true,
        }
    }
}

/// The graph.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// By name.
    pub switches: Vec<Switch>,
    /// By name.
    pub nodes: Vec<TopoNode>,
    /// Every network some interface serves, by name.
    pub networks: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Switch {
    /// The LLDP system name, else the chassis ID.
    pub name: String,
    /// Known by chassis ID only (no system name advertised).
    pub chassis_only: bool,
    /// How many nodes see it: one only may be a cabling mistake, or a
    /// switch that is not a top-of-rack.
    pub nodes: usize,
    pub ports: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopoNode {
    pub name: String,
    pub surveyed: bool,
    pub unresolved: Vec<String>,
    pub interfaces: Vec<TopoIface>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopoIface {
    pub name: String,
    pub up: bool,
    pub networks: Vec<String>,
    /// The switch it is cabled to (an index into `switches`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

impl TopoIface {
    /// Serves no network: no map matches it.
    pub fn unmapped(&self) -> bool {
        self.networks.is_empty()
    }
}

/// Builds the graph from the nodes' views.
pub fn build<'a>(nodes: impl IntoIterator<Item = &'a NodeView>) -> Topology {
    let mut nodes: Vec<&NodeView> = nodes.into_iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    // Switches first, so interfaces can point at them by index.
    let mut switches: BTreeMap<String, (bool, BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    let mut networks = BTreeSet::new();
    for node in &nodes {
        for iface in &node.interfaces {
            networks.extend(iface.networks.iter().cloned());
            if let Some(n) = &iface.neighbor {
                let (name, chassis_only) = switch_name(n);
                let entry = switches.entry(name).or_default();
                entry.0 = chassis_only;
                entry.1.insert(node.name.as_str());
                entry.2.insert(n.port_id.as_str());
            }
        }
    }
    let index: BTreeMap<&str, usize> = switches
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let topo_nodes = nodes
        .iter()
        .map(|node| {
            let mut interfaces: Vec<TopoIface> = node
                .interfaces
                .iter()
                .map(|i| TopoIface {
                    name: i.name.clone(),
                    up: i.up,
                    networks: i.networks.clone(),
                    switch: i
                        .neighbor
                        .as_ref()
                        .map(|n| index[switch_name(n).0.as_str()]),
                    port: i.neighbor.as_ref().map(|n| n.port_id.clone()),
                })
                .collect();
            interfaces.sort_by(|a, b| a.name.cmp(&b.name));
            TopoNode {
                name: node.name.clone(),
                surveyed: node.surveyed,
                unresolved: node.unresolved.clone(),
                interfaces,
            }
        })
        .collect();
    Topology {
        switches: switches
            .into_iter()
            .map(|(name, (chassis_only, seen, ports))| Switch {
                name,
                chassis_only,
                nodes: seen.len(),
                ports: ports.into_iter().map(str::to_string).collect(),
            })
            .collect(),
        nodes: topo_nodes,
        networks: networks.into_iter().collect(),
    }
}

fn switch_name(n: &NeighborView) -> (String, bool) {
    match &n.system_name {
        Some(name) => (name.clone(), false),
        None => (n.chassis_id.clone(), true),
    }
}

/// A network's colour: its own when its name is a colour, else one of a
/// palette, by its place among the networks.
pub fn color(network: &str, networks: &[String]) -> &'static str {
    const NAMED: [(&str, &str); 10] = [
        ("green", "#2e9e4f"),
        ("red", "#d64541"),
        ("blue", "#2f6fd6"),
        ("orange", "#e8862a"),
        ("purple", "#8e44ad"),
        ("yellow", "#c9a800"),
        ("teal", "#16a3a3"),
        ("pink", "#d6589c"),
        ("brown", "#8d5b3a"),
        ("gray", "#7f8c8d"),
    ];
    const PALETTE: [&str; 8] = [
        "#2f6fd6", "#e8862a", "#2e9e4f", "#d64541", "#8e44ad", "#16a3a3", "#c9a800", "#d6589c",
    ];
    let named = |net: &str| NAMED.iter().find(|(n, _)| net.contains(n)).map(|(_, c)| *c);
    if let Some(c) = named(network) {
        return c;
    }
    // The others take the palette in order, skipping what named networks
    // of this picture already show.
    let taken: Vec<&str> = networks.iter().filter_map(|n| named(n)).collect();
    let free: Vec<&str> = PALETTE
        .iter()
        .copied()
        .filter(|c| !taken.contains(c))
        .collect();
    let palette = if free.is_empty() {
        &PALETTE[..]
    } else {
        &free[..]
    };
    let at = networks
        .iter()
        .filter(|n| named(n).is_none())
        .position(|n| n == network)
        .unwrap_or(0);
    palette[at % palette.len()]
}

/// Escapes text for XML (SVG, HTML) and DOT strings alike.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

const NODE_COL: u32 = 190;
const SWITCH_COL: u32 = 210;
const HEADER: u32 = 124;
const BOX_BOTTOM: u32 = 94;
const ROW: u32 = 24;
const LEGEND: u32 = 64;

/// One self-contained SVG: no script, no external font or URL.
pub fn svg(t: &Topology) -> String {
    // One column per switch, then one for interfaces without a neighbor.
    let columns = t.switches.len() + 1;
    let rows: Vec<u32> = t.nodes.iter().map(|n| node_rows(n, columns)).collect();
    let width = NODE_COL + SWITCH_COL * columns as u32 + 20;
    let height = HEADER + rows.iter().sum::<u32>() * ROW + LEGEND + 20;
    let mut out = String::with_capacity(200 + t.nodes.len() * 800);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"##
    );
    out.push_str(r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    // Switch headers; their bus lines come after the node bands, over them.
    for (i, sw) in t.switches.iter().enumerate() {
        let x = NODE_COL + SWITCH_COL * i as u32;
        let lone = sw.nodes == 1;
        let dash = if lone {
            r##" stroke-dasharray="6 3""##
        } else {
            ""
        };
        let _ = write!(
            out,
            r##"<g class="switch"><rect x="{}" y="20" width="{}" height="{}" rx="6" fill="#eef1f5" stroke="#34495e" stroke-width="1.5"{dash}/><text x="{}" y="44" text-anchor="middle" font-weight="bold"{}>{}</text><text x="{}" y="64" text-anchor="middle" fill="#555">{}, {}</text>"##,
            x + 10,
            SWITCH_COL - 20,
            BOX_BOTTOM - 20,
            x + SWITCH_COL / 2,
            if sw.chassis_only {
                r##" font-style="italic""##
            } else {
                ""
            },
            esc(&sw.name),
            x + SWITCH_COL / 2,
            count(sw.ports.len(), "port"),
            count(sw.nodes, "node"),
        );
        if lone {
            let _ = write!(
                out,
                r##"<text x="{}" y="82" text-anchor="middle" fill="#c0392b">seen by one node only</text>"##,
                x + SWITCH_COL / 2
            );
        }
        out.push_str("</g>");
    }
    let x = NODE_COL + SWITCH_COL * t.switches.len() as u32;
    let _ = write!(
        out,
        r##"<text x="{}" y="52" text-anchor="middle" fill="#777">no LLDP neighbor</text>"##,
        x + SWITCH_COL / 2
    );
    // One band per node.
    let mut y = HEADER;
    let mut bus_end = vec![0u32; t.switches.len()];
    for (node, rows) in t.nodes.iter().zip(&rows) {
        let band = rows * ROW;
        let warn = !node.unresolved.is_empty() || !node.surveyed;
        let _ = write!(
            out,
            r##"<g class="node"><rect x="0" y="{y}" width="{width}" height="{band}" fill="{}"/><text x="10" y="{}" font-weight="bold">{}</text>"##,
            if warn {
                "#fdecea"
            } else if (y / ROW) % 2 == 0 {
                "#fafbfc"
            } else {
                "#ffffff"
            },
            y + 16,
            esc(&node.name)
        );
        if !node.surveyed {
            let _ = write!(
                out,
                r##"<text x="10" y="{}" fill="#c0392b">no NodeSurvey</text>"##,
                y + 32
            );
        } else if !node.unresolved.is_empty() {
            let _ = write!(
                out,
                r##"<text x="10" y="{}" fill="#c0392b">unresolved: {}</text>"##,
                y + 32,
                esc(&node.unresolved.join(", "))
            );
        }
        // Interfaces in their switch's column, stacked.
        let mut used = vec![0u32; columns];
        for iface in &node.interfaces {
            let col = iface.switch.unwrap_or(t.switches.len());
            let ix = NODE_COL + SWITCH_COL * col as u32;
            let iy = y + used[col] * ROW + 4;
            used[col] += 1;
            let fill = iface
                .networks
                .first()
                .map_or("#ffffff", |n| color(n, &t.networks));
            let (stroke, dash) = if iface.unmapped() {
                ("#999999", r##" stroke-dasharray="3 2""##)
            } else {
                ("#2c3e50", "")
            };
            let opacity = if iface.up { "1" } else { "0.45" };
            if let Some(sw) = iface.switch {
                bus_end[sw] = iy + 8;
                let _ = write!(
                    out,
                    r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#b8c2cc" stroke-width="2"/>"##,
                    ix + 24,
                    iy + 8,
                    ix + 34,
                    iy + 8
                );
            }
            let label = match &iface.port {
                Some(port) => format!("{} \u{2192} {}", iface.name, port),
                None => iface.name.clone(),
            };
            let text_fill = if iface.unmapped() {
                "#333333"
            } else {
                "#ffffff"
            };
            let _ = write!(
                out,
                r##"<g class="interface" opacity="{opacity}"><rect x="{}" y="{iy}" width="{}" height="17" rx="8" fill="{fill}" stroke="{stroke}"{dash}/><text x="{}" y="{}" fill="{text_fill}">{}</text>"##,
                ix + 34,
                SWITCH_COL - 44,
                ix + 42,
                iy + 13,
                esc(&label)
            );
            if iface.networks.len() > 1 {
                let _ = write!(
                    out,
                    r##"<text x="{}" y="{}" fill="{text_fill}" text-anchor="end">+{}</text>"##,
                    ix + SWITCH_COL - 16,
                    iy + 13,
                    iface.networks.len() - 1
                );
            }
            out.push_str("</g>");
        }
        out.push_str("</g>");
        y += band;
    }
    for (i, end) in bus_end.iter().enumerate() {
        let _ = write!(
            out,
            r##"<line x1="{bx}" y1="{BOX_BOTTOM}" x2="{bx}" y2="{}" stroke="#b8c2cc" stroke-width="2"/>"##,
            (*end).max(BOX_BOTTOM),
            bx = NODE_COL + SWITCH_COL * i as u32 + 24,
        );
    }
    legend(&mut out, t, y + 14);
    out.push_str("</svg>\n");
    out
}

/// "1 port", "3 ports".
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Rows a node needs: the most interfaces in one column, and room for its
/// name (and its warning, when it has one).
fn node_rows(node: &TopoNode, columns: usize) -> u32 {
    let mut per = vec![0u32; columns];
    for i in &node.interfaces {
        per[i.switch.unwrap_or(columns - 1)] += 1;
    }
    let warned = !node.surveyed || !node.unresolved.is_empty();
    per.into_iter()
        .max()
        .unwrap_or(0)
        .max(1 + u32::from(warned))
}

fn legend(out: &mut String, t: &Topology, y: u32) {
    let mut x = 10;
    let _ = write!(
        out,
        r##"<g class="legend"><text x="{x}" y="{}">networks:</text>"##,
        y + 13
    );
    x += 72;
    for n in &t.networks {
        let w = 24 + 8 * n.chars().count() as u32;
        let _ = write!(
            out,
            r##"<rect x="{x}" y="{y}" width="{w}" height="17" rx="8" fill="{}"/><text x="{}" y="{}" fill="#ffffff">{}</text>"##,
            color(n, &t.networks),
            x + 10,
            y + 13,
            esc(n)
        );
        x += w + 8;
    }
    let _ = write!(
        out,
        r##"<rect x="{x}" y="{y}" width="100" height="17" rx="8" fill="#ffffff" stroke="#999999" stroke-dasharray="3 2"/><text x="{}" y="{}">matches no map</text>"##,
        x + 8,
        y + 13
    );
    let _ = write!(
        out,
        r##"<text x="10" y="{}" fill="#555">faded: link down; red band: a map selecting the node is unresolved there, or no agent; dashed switch: seen by one node; italic: known by chassis ID only</text></g>"##,
        y + 40
    );
}

/// Graphviz: switches and node interfaces, edges labelled with ports.
pub fn dot(t: &Topology) -> String {
    let mut out = String::from(
        "graph fabric {\n  rankdir=LR;\n  node [fontname=\"sans-serif\", fontsize=10];\n",
    );
    for (i, sw) in t.switches.iter().enumerate() {
        let style = match (sw.chassis_only, sw.nodes == 1) {
            (_, true) => "dashed",
            (true, false) => "\"filled,dotted\"",
            (false, false) => "filled",
        };
        let _ = writeln!(
            out,
            "  sw{i} [label=\"{}\", shape=box, style={style}, fillcolor=\"#eef1f5\"];",
            esc(&sw.name)
        );
    }
    for (n, node) in t.nodes.iter().enumerate() {
        let warn = !node.unresolved.is_empty() || !node.surveyed;
        let _ = writeln!(out, "  subgraph cluster_{n} {{");
        let label = if node.unresolved.is_empty() {
            esc(&node.name)
        } else {
            format!(
                "{} (unresolved: {})",
                esc(&node.name),
                esc(&node.unresolved.join(", "))
            )
        };
        let _ = writeln!(
            out,
            "    label=\"{label}\";{}",
            if warn { " color=\"#c0392b\";" } else { "" }
        );
        for (i, iface) in node.interfaces.iter().enumerate() {
            let (fill, style) = match iface.networks.first() {
                Some(net) => (color(net, &t.networks), "filled"),
                None => ("#ffffff", "dashed"),
            };
            let _ = writeln!(
                out,
                "    n{n}i{i} [label=\"{}{}\", shape=box, style={style}, fillcolor=\"{fill}\"];",
                esc(&iface.name),
                if iface.networks.is_empty() {
                    String::new()
                } else {
                    format!("\\n{}", esc(&iface.networks.join(",")))
                }
            );
        }
        out.push_str("  }\n");
        for (i, iface) in node.interfaces.iter().enumerate() {
            if let (Some(sw), Some(port)) = (iface.switch, &iface.port) {
                let _ = writeln!(out, "  n{n}i{i} -- sw{sw} [label=\"{}\"];", esc(port));
            }
        }
    }
    out.push_str("}\n");
    out
}

/// The model as JSON.
pub fn json(t: &Topology) -> String {
    let mut out = serde_json::to_string_pretty(t).unwrap_or_else(|_| "{}".into());
    out.push('\n');
    out
}

/// The HTML page the controller serves: the SVG and a summary, with no
/// script and nothing from the network.
pub fn html(t: &Topology, summary: &[(String, String)]) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Surveyor: the fabric</title><style>body{font-family:sans-serif;margin:16px;color:#222}table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccd;padding:3px 10px;text-align:left}svg{border:1px solid #ccd}</style></head><body><h1>The fabric, as LLDP sees it</h1>",
    );
    let _ = write!(
        out,
        "<p>{} node(s), {} switch(es), {} network(s).</p>",
        t.nodes.len(),
        t.switches.len(),
        t.networks.len()
    );
    if !summary.is_empty() {
        out.push_str("<table><tr><th>NetworkMap</th><th>Resolved</th></tr>");
        for (map, resolved) in summary {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(map),
                esc(resolved)
            );
        }
        out.push_str("</table>");
    }
    out.push_str(&svg(t));
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, networks: &[&str], switch: Option<(&str, &str)>) -> IfaceView {
        IfaceView {
            name: name.into(),
            up: true,
            networks: networks.iter().map(|s| s.to_string()).collect(),
            neighbor: switch.map(|(sys, port)| NeighborView {
                system_name: (!sys.starts_with("00:")).then(|| sys.to_string()),
                chassis_id: if sys.starts_with("00:") {
                    sys.into()
                } else {
                    format!("chassis-{sys}")
                },
                port_id: port.into(),
            }),
        }
    }

    /// Several nodes on one switch, one node on two, a node with no LLDP,
    /// a switch known by chassis only, a node with an unresolved map.
    fn fixture() -> Vec<NodeView> {
        vec![
            NodeView {
                name: "node02".into(),
                interfaces: vec![
                    iface("ens4", &["green"], Some(("tor-green-01", "Ethernet1/2"))),
                    iface("ens5", &["red"], Some(("tor-red-01", "Ethernet1/2"))),
                ],
                unresolved: vec![],
                surveyed: true,
            },
            NodeView {
                name: "node01".into(),
                interfaces: vec![
                    iface("ens4", &["green"], Some(("tor-green-01", "Ethernet1/1"))),
                    iface("ens6", &[], Some(("00:11:22:33:44:55", "gi0/1"))),
                ],
                unresolved: vec!["red".into()],
                surveyed: true,
            },
            NodeView {
                name: "node03".into(),
                interfaces: vec![iface("eth0", &[], None)],
                unresolved: vec!["green".into()],
                surveyed: true,
            },
        ]
    }

    #[test]
    fn the_graph_of_switches_ports_and_interfaces() {
        let t = build(&fixture());
        let names: Vec<&str> = t.switches.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["00:11:22:33:44:55", "tor-green-01", "tor-red-01"]);
        let green = &t.switches[1];
        assert_eq!(
            (green.nodes, green.ports.clone()),
            (
                2,
                vec!["Ethernet1/1".to_string(), "Ethernet1/2".to_string()]
            )
        );
        assert!(t.switches[0].chassis_only && t.switches[0].nodes == 1);
        assert_eq!(t.switches[2].nodes, 1, "seen by one node");
        assert_eq!(t.networks, ["green", "red"]);
        let node01 = &t.nodes[0];
        assert_eq!(node01.name, "node01", "sorted");
        assert_eq!(node01.interfaces[0].switch, Some(1));
        assert!(node01.interfaces[1].unmapped());
        assert_eq!(t.nodes[2].interfaces[0].switch, None);
    }

    #[test]
    fn renderings_are_golden() {
        let t = build(&fixture());
        for (name, text) in [("svg", svg(&t)), ("dot", dot(&t)), ("json", json(&t))] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/topology")
                .join(format!("fabric.{name}"));
            if std::env::var_os("SURVEYOR_BLESS").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let golden = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (SURVEYOR_BLESS=1 writes it)", path.display()));
            assert!(
                golden == text,
                "{} differs from {name} output (review, then SURVEYOR_BLESS=1)",
                path.display()
            );
        }
    }

    #[test]
    fn the_svg_is_self_contained_and_escapes_names() {
        let mut nodes = fixture();
        nodes[0].name = "node<&>\"02".into();
        let s = svg(&build(&nodes));
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(
            !s.contains("<script")
                && !s.contains("href")
                && !s.contains("@import")
                && !s.contains("url(")
        );
        assert_eq!(s.matches("http").count(), 1, "only the SVG namespace");
        assert!(s.contains("node&lt;&amp;&gt;&quot;02"));
        assert!(!s.contains("node<&>"));
        let d = dot(&build(&nodes));
        assert!(d.contains("node&lt;&amp;&gt;&quot;02"));
    }

    #[test]
    fn a_node_view_comes_from_a_survey() {
        let status: NodeSurveyStatus = serde_json::from_value(serde_json::json!({
            "summary": {"interfaces": 1, "up": 1, "neighbors": 1, "networks": "green"},
            "interfaces": [{"name": "ens4", "index": 4, "kind": "physical", "operState": "up", "carrier": true, "mtu": 1500,
                "networks": ["green"],
                "lldp": {"chassisId": {"subtype": "mac", "value": "00:11:22:33:44:55"},
                         "portId": {"subtype": "ifname", "value": "Ethernet1/7"}, "systemName": "tor-green-01", "ttlSeconds": 120}}],
            "networks": {
                "green": {"device": "ens4", "candidates": ["ens4"]},
                "red": {"candidates": [], "reason": "no match"},
                "blue": {"candidates": [], "reason": "not selected", "selected": false}
            }
        }))
        .unwrap();
        let v = NodeView::of("node1", &status);
        assert_eq!(v.unresolved, ["red"], "blue does not select this node");
        assert_eq!(
            v.interfaces[0].neighbor.as_ref().unwrap().port_id,
            "Ethernet1/7"
        );
        assert!(v.interfaces[0].up);
    }
}
