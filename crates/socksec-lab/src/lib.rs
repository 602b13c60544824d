//! The socksec IPsec lab, as a library behind the `socksec-lab` binary.
//!
//! The host kernel cannot hold ESP/AH SAs, so the lab boots Debian's stock kernel under qemu
//! TCG, once, and runs every scenario inside that one boot:
//!
//! * [`host`]: `socksec-lab run` (root): installs the Debian packages it needs, downloads and
//!   `depmod`s the current `linux-image-amd64` kernel into `lab/work/`, writes the initramfs
//!   (static busybox + modules in `modules.dep` order + a stage-1 `/init`), boots qemu with the
//!   host `/` as a read-only 9p lower layer of an overlay and a writable 9p share for results,
//!   then prints one line per scenario and fails unless all passed and the guest finished.
//! * [`guest`]: `socksec-lab guest`: the same binary inside the guest (refuses to run
//!   elsewhere): mounts, runs the [`scenarios`], writes [`results`], powers off.
//! * [`lab`]: scenario infrastructure: the `moon`/`sun` namespaces, one charon per namespace,
//!   swanctl, parsers of `ip xfrm` and `swanctl --list-sas`, sockets, and the socket query.
//!
//! # Adding a scenario
//! Write `fn(&mut Lab) -> Result<()>` in a module under `scenarios/` and list it in
//! [`scenarios::ALL`]. The [`lab::Lab`] it gets has fresh namespaces; start charons with
//! [`lab::charon::Charon::spawn`] (or add SAs with [`lab::netns::Netns::ip`]), open real
//! sockets with [`lab::sockets`], record what the kernel and charon show with
//! [`lab::Lab::evidence`], and check the library with [`lab::Lab::check_socket`]. Return an
//! error to fail; `ip xfrm` state and policies are recorded after every scenario. Variants of
//! the IKEv2 PSK set-up are one [`scenarios::ikev2::Case`] each.

pub mod cmd;
pub mod error;
pub mod guest;
pub mod host;
pub mod lab;
pub mod results;
pub mod scenarios;
pub mod sys;
