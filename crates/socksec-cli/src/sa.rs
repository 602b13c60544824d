//! `socksec sa GUID`: the SAs an IPSEC2 `SaLookupContext` names, as they are now.

use std::process::ExitCode;

use serde_json::json;
use socksec::{Error, ErrorKind, SaDetails, SaLookupContext};

use crate::EXIT_QUERY_FAILED;
use crate::query::failed;

/// Looks the context up and prints it; exit 1 when it cannot be looked up or names nothing
/// that still exists.
pub(crate) fn run(guid: &str, json_out: bool) -> ExitCode {
    let result = guid
        .parse::<SaLookupContext>()
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, e.to_string()))
        .and_then(|context| socksec::sa_details(&context));
    match result {
        Ok(details) => {
            if json_out {
                println!("{}", json!(details));
            } else {
                print_human(&details);
            }
            if details.found() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_QUERY_FAILED)
            }
        }
        Err(err) => failed(&err, json_out),
    }
}

fn print_human(d: &SaDetails) {
    let c = &d.context;
    println!(
        "SA lookup context {c}: IKE SA #{} CHILD SA #{} SPI out 0x{:08x} in 0x{:08x}",
        c.ike_sa_id, c.child_sa_id, c.spi_out, c.spi_in
    );
    if let Some(ike) = &d.ike_sa {
        println!(
            "  IKE SA {} #{}: {} IKEv{} {} <-> {} ({}), local id {}, remote id {}",
            ike.name,
            ike.uniqueid,
            ike.state,
            ike.version,
            ike.local_host.map_or("?".to_string(), |h| h.to_string()),
            ike.remote_host.map_or("?".to_string(), |h| h.to_string()),
            ike.encr_alg.as_deref().unwrap_or("?"),
            ike.local_id,
            ike.remote_id
        );
        for id in [&ike.remote_eap_id, &ike.remote_xauth_id]
            .into_iter()
            .flatten()
        {
            println!("    remote user id {id}");
        }
    }
    if let Some(child) = &d.child_sa {
        println!(
            "  CHILD SA {} #{}: {} {} {} reqid {} {} === {}",
            child.name,
            child.uniqueid,
            child.state,
            child.mode,
            child.protocol.as_deref().unwrap_or("?"),
            child.reqid,
            child.local_ts.join(","),
            child.remote_ts.join(",")
        );
    }
    for (dir, sas) in [("outbound", &d.outbound), ("inbound", &d.inbound)] {
        for sa in sas {
            println!(
                "  kernel {dir}: {} {:?} spi 0x{:08x} reqid {} {} -> {} {}",
                sa.proto,
                sa.mode,
                sa.spi,
                sa.reqid,
                sa.src,
                sa.dst,
                sa.algorithm_names()
            );
        }
    }
    for note in &d.notes {
        println!("  {note}");
    }
}
