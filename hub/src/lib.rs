//! socer: the site agent, the central hub, the demo and the technician commands.
//!
//! `wire` is the MQTT contract both sides import; `site` and `central` are the two daemons; `cli`
//! holds the one-shot technician commands. The pure energy rules live in `central::balance` and
//! `central::incentive` and do no I/O.

pub mod central;
pub mod check;
pub mod cli;
pub mod days;
pub mod demo;
pub mod diag;
pub mod files;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod instance;
pub mod logging;
pub mod metrics;
pub mod mqttlink;
pub mod site;
pub mod solar;
pub mod systemd;
pub mod tls;
pub mod webui;
pub mod wire;
