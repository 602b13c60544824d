//! What the guest hands back to the host: one JSON line per scenario, then a completion marker.
//!
//! The files live in the writable 9p share (`/lab-out` in the guest). The host reads them after
//! qemu exits; a missing [`DONE_FILE`] means the guest did not finish.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Scenario results, one JSON object per line, written as each scenario ends.
pub const RESULTS_FILE: &str = "results.jsonl";
/// Written last by the guest, after every scenario ran; holds a [`GuestSummary`].
pub const DONE_FILE: &str = "done.json";
/// qemu's serial console (kernel messages, init script and guest progress).
pub const CONSOLE_LOG: &str = "console.log";
/// The socksec CLI, copied into the share by the host.
pub const CLI_FILE: &str = "socksec";
/// The broker daemon, copied into the share by the host.
pub const SOCKSECD_FILE: &str = "socksecd";
/// The osquery extension (`socksec.ext`) in the shared folder.
pub const OSQUERY_EXT_FILE: &str = "socksec.ext";
/// The C ABI probe (`host/wsa_probe.c`), compiled into the share by the host.
pub const WSA_PROBE_FILE: &str = "wsa-probe";
/// The Windows-style secure connection (`host/secure_flow.c`), compiled into the share.
pub const SECURE_FLOW_FILE: &str = "secure-flow";
/// The path of the unpacked libreswan package (`host::libreswan`), written by the host.
pub const LIBRESWAN_FILE: &str = "libreswan-root";

/// The outcome of one scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every assertion held.
    Pass,
    /// An assertion failed or the set-up broke.
    Fail,
}

/// One scenario's result, as written to [`RESULTS_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Scenario name (stable, used by `--filter`).
    pub name: String,
    /// Pass or fail.
    pub outcome: Outcome,
    /// Wall time of the scenario inside the guest, set-up and tear-down included.
    pub duration_ms: u64,
    /// Failure message, or a one-line summary of what was shown on success.
    pub message: String,
    /// Captured evidence: command output (`ip xfrm state`, `swanctl --list-sas`, the socket
    /// answer...) by label.
    pub evidence: BTreeMap<String, String>,
}

/// Written to [`DONE_FILE`] when the guest finished its run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestSummary {
    /// Guest kernel release (`uname -r`).
    pub kernel: String,
    /// Scenarios that ran.
    pub scenarios: usize,
    /// Time from the guest binary's start to the end of the last scenario.
    pub total_ms: u64,
}
