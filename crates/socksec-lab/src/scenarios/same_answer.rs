//! `socksec ls` and `socksec query` give one answer for a socket: both gather its snapshots and
//! call the library's one answer function. Scenarios check it for each mechanism they set up.

use std::os::fd::AsRawFd;

use serde_json::Value;

use crate::cmd::sh;
use crate::error::{Context, Result, ensure};
use crate::results::CLI_FILE;

/// Checks that `socksec ls --json` in namespace `ns` lists `socket` (a socket of this process)
/// exactly as `socksec query --pid SELF --fd N --tokens --json` answers it, as the two share
/// one answer function: every field but those only a listing has (owning processes, state,
/// inode, uid) and WireGuard's handshake age, which counts the seconds between the commands.
pub(crate) fn check_ls_equals_query(ns: &str, socket: &impl AsRawFd) -> Result<()> {
    let cli = std::path::Path::new(crate::guest::SHARE)
        .join(CLI_FILE)
        .display()
        .to_string();
    let (pid, fd) = (
        std::process::id().to_string(),
        socket.as_raw_fd().to_string(),
    );
    let args = [
        "netns", "exec", ns, &cli, "query", "--pid", &pid, "--fd", &fd,
    ];
    let text = sh("ip", args.into_iter().chain(["--tokens", "--json"]))
        .with_context(|| format!("running `socksec query --pid {pid} --fd {fd}` in {ns}"))?;
    let mut query: Value = serde_json::from_str(&text).context("parsing `socksec query --json`")?;
    let transport = if query["socket"]["protocol"] == "tcp" {
        "--tcp"
    } else {
        "--udp"
    };
    let text = sh("ip", ["netns", "exec", ns, &cli, "ls", transport, "--json"])
        .with_context(|| format!("running `socksec ls {transport} --json` in {ns}"))?;
    let list: Value = serde_json::from_str(&text).context("parsing `socksec ls --json`")?;
    let (local, peer) = (
        query["socket"]["local"].clone(),
        query["socket"]["peer"].clone(),
    );
    let mut listed = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["socket"]["local"] == local && e["socket"]["peer"] == peer)
        .cloned()
        .with_context(|| format!("`socksec ls --json` in {ns} does not list {local} -> {peer}"))?;
    if let Some(entry) = listed.as_object_mut() {
        for only_listed in ["pid", "command", "processes", "state", "inode", "uid"] {
            entry.remove(only_listed);
        }
    }
    for answer in [&mut query, &mut listed] {
        for p in answer["protections"].as_array_mut().into_iter().flatten() {
            if let Some(wg) = p.get_mut("wireguard").and_then(Value::as_object_mut) {
                wg.remove("handshake_age");
            }
        }
    }
    ensure!(
        listed == query,
        "`socksec ls --json` and `socksec query --json` differ for {local} -> {peer} in {ns}:\n\
         ls:    {listed}\nquery: {query}"
    );
    check_ipsec2_ids(ns, &args, &listed)
}

/// When the listed answer names an IKE SA (a WireGuard peer has none: its ids are 0), the
/// IPSEC2 answer for the same socket carries the same ids: `MmSaId` is the listed IKE SA's
/// unique id and `QmSaId` its CHILD SA's, both set (non-zero), with the same flags as the
/// listing.
fn check_ipsec2_ids(ns: &str, query_args: &[&str], listed: &Value) -> Result<()> {
    let ids = &listed["peer"];
    if ids["ike_sa_id"].as_u64().is_none_or(|id| id == 0) {
        return Ok(());
    }
    let text = sh(
        "ip",
        query_args
            .iter()
            .copied()
            .chain(["--protocol", "ipsec2", "--json"]),
    )
    .with_context(|| format!("running `socksec query --protocol ipsec2` in {ns}"))?;
    let ipsec2: Value = serde_json::from_str(&text).context("parsing the IPSEC2 answer")?;
    let (mm, qm) = (&ipsec2["ipsec2"]["mm_sa_id"], &ipsec2["ipsec2"]["qm_sa_id"]);
    ensure!(
        mm == &ids["ike_sa_id"]
            && qm == &ids["child_sa_id"]
            && mm.as_u64().is_some_and(|id| id != 0)
            && qm.as_u64().is_some_and(|id| id != 0)
            && ipsec2["flags"] == listed["flags"],
        "the IPSEC2 answer's ids (mm_sa_id {mm}, qm_sa_id {qm}, flags {}) are not the listed \
         IKE and CHILD SA ({}, {}, flags {}) in {ns}",
        ipsec2["flags"],
        ids["ike_sa_id"],
        ids["child_sa_id"],
        listed["flags"]
    );
    Ok(())
}
