//! strongSwan IKEv2 with pre-shared keys, transport mode.

use std::time::{Duration, Instant};

use crate::error::{Context, Result, bail, ensure};
use crate::lab::charon::Charon;
use crate::lab::swanctl::PskConnection;
use crate::lab::{Expect, Lab, sockets, xfrm};

const START: Duration = Duration::from_secs(30);
const IKE: Duration = Duration::from_secs(60);

/// The kernel SA from `from` to `to` with `spi`, or an error naming what is there.
fn find_sa<'a>(
    states: &'a [xfrm::State],
    spi: u32,
    from: &str,
    to: &str,
) -> Result<&'a xfrm::State> {
    states
        .iter()
        .find(|s| s.spi == spi && s.src == from && s.dst == to)
        .with_context(|| {
            format!("no kernel SA spi {spi:#010x} {from} -> {to}; the kernel has {states:?}")
        })
}

/// ESP AES-GCM-16 (128-bit key): a TCP connection over it is secured and encrypted on both
/// ends, by the SAs charon negotiated.
pub fn esp_gcm(lab: &mut Lab) -> Result<()> {
    let conn = PskConnection::transport_esp("aes128gcm16-modp2048");
    let mut moon = Charon::spawn(lab.moon(), &conn.render(lab.moon(), lab.sun()), &lab.dir)?;
    let mut sun = Charon::spawn(lab.sun(), &conn.render(lab.sun(), lab.moon()), &lab.dir)?;
    let t = Instant::now();
    moon.ready(START)?;
    sun.ready(START)?;
    let started = t.elapsed();

    let t = Instant::now();
    let initiate = moon.initiate(&conn.child, IKE)?;
    lab.evidence("swanctl --initiate (moon)", initiate);
    let (ike, child) = moon.wait_child(&conn.child, IKE)?;
    let negotiated = t.elapsed();
    let (moon_sas, _) = moon.list_sas()?;
    lab.evidence("swanctl --list-sas (moon)", moon_sas);
    let (sun_sas, sun_parsed) = sun.list_sas()?;
    lab.evidence("swanctl --list-sas (sun)", sun_sas);

    ensure!(
        ike.remote_id == lab.sun().id,
        "moon's IKE_SA peer is {:?}, expected {}",
        ike.remote_id,
        lab.sun().id
    );
    ensure!(
        child.mode == "TRANSPORT" && child.protocol == "ESP",
        "CHILD_SA is {} {}",
        child.mode,
        child.protocol
    );
    ensure!(
        child.encr_alg.as_deref() == Some("AES_GCM_16") && child.encr_keysize == Some(128),
        "CHILD_SA cipher is {:?}/{:?}, expected AES_GCM_16/128",
        child.encr_alg,
        child.encr_keysize
    );
    // Both peers must agree on the SPI pair.
    let sun_child = sun_parsed
        .iter()
        .flat_map(|i| &i.children)
        .find(|c| c.name == conn.child)
        .context("sun has no CHILD_SA")?;
    ensure!(
        (sun_child.spi_in, sun_child.spi_out) == (child.spi_out, child.spi_in),
        "peers disagree on SPIs: moon in/out {:08x}/{:08x}, sun in/out {:08x}/{:08x}",
        child.spi_in,
        child.spi_out,
        sun_child.spi_in,
        sun_child.spi_out
    );

    // The kernel holds the same SAs, with the algorithm charon asked for.
    let (m, s) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    let states = lab.moon().xfrm_states()?;
    let out_sa = find_sa(&states, child.spi_out, &m, &s)?;
    let in_sa = find_sa(&states, child.spi_in, &s, &m)?;
    for sa in [out_sa, in_sa] {
        ensure!(
            sa.proto == "esp" && sa.mode == "transport",
            "kernel SA {sa:?} is not ESP transport"
        );
        ensure!(
            sa.reqid == child.reqid,
            "kernel SA reqid {} != charon's {}",
            sa.reqid,
            child.reqid
        );
        match sa.aead.as_deref() {
            Some(a) if a.contains("gcm(aes)") => {}
            other => bail!(
                "kernel SA {:#010x} has AEAD {other:?}, expected rfc4106(gcm(aes))",
                sa.spi
            ),
        }
    }

    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5002, false)?;
    let proto = "esp".to_owned();
    let mode = "transport".to_owned();
    lab.check_socket(
        "client",
        true,
        &pair.client,
        &Expect::Protected {
            encrypted: true,
            proto: proto.clone(),
            mode: mode.clone(),
            out_spi: child.spi_out,
            in_spi: child.spi_in,
        },
    )?;
    lab.check_socket(
        "server",
        false,
        &pair.server,
        &Expect::Protected {
            encrypted: true,
            proto,
            mode,
            out_spi: child.spi_in,
            in_spi: child.spi_out,
        },
    )?;

    // The exchange really went through the SAs: their packet counters moved.
    let (after, after_parsed) = moon.list_sas()?;
    lab.evidence("swanctl --list-sas after traffic (moon)", after);
    let used = after_parsed
        .iter()
        .flat_map(|i| &i.children)
        .find(|c| c.spi_out == child.spi_out)
        .context("the CHILD_SA disappeared after the TCP exchange")?;
    ensure!(
        used.packets_out > 0 && used.packets_in > 0,
        "the TCP exchange did not go through the CHILD_SA (packets in {} out {})",
        used.packets_in,
        used.packets_out
    );
    lab.note(format!(
        "charon up in {} ms, IKE+CHILD_SA in {} ms, SPIs out {:08x} in {:08x}, TCP over ESP in {} ms",
        started.as_millis(),
        negotiated.as_millis(),
        child.spi_out,
        child.spi_in,
        pair.elapsed.as_millis()
    ));
    Ok(())
}
