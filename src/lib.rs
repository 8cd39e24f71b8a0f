//! Surveyor gives network interfaces meaning.
//!
//! A per-node agent discovers interfaces from netlink and their switch
//! neighbors from LLDP, resolves semantic networks ("green") to local
//! devices, and keeps a node-local snapshot that the `surveyor` CNI plugin
//! reads at ADD time to delegate to macvlan or ipvlan on the right NIC.
//!
//! Pure logic (the inventory model, the survey filter) is kept apart from
//! I/O (discovery over netlink, sysfs and ethtool).

pub mod agent;
pub mod atomic;
pub mod attachment;
pub mod cli;
pub mod cni;
pub mod condition;
pub mod connect;
pub mod controller;
pub mod crd;
pub mod discovery;
pub mod dra;
pub mod events;
pub mod inventory;
pub mod kubelet;
pub mod lldp;
pub mod memory;
pub mod network_map;
pub mod node;
pub mod report;
pub mod resolve;
pub mod snapshot;
pub mod state_dir;
pub mod survey;
pub mod topology;
pub mod uninstall;
