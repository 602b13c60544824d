//! `socksec`: ask the system whether a socket's connection is protected, how, and by whom.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use socksec::SecurityProtocol;

mod check;
mod connect;
mod ls;
mod metrics;
mod pid;
mod query;
mod sa;
mod selftest;
mod table;
mod watch;

/// Exit code of a query that failed.
pub(crate) const EXIT_QUERY_FAILED: u8 = 1;

#[derive(Parser)]
#[command(
    name = "socksec",
    version,
    about = "Is this socket's connection protected by the system (IPsec), how, and by whom?",
    after_help = "Exit codes: 0 success, 1 the query failed, 2 usage error.\n\n\
Examples:\n  \
socksec query --fd 3 3<>/dev/tcp/192.0.2.10/22     query a connection bash opened on fd 3\n  \
socksec query --connect 192.0.2.10:22 --json       connect, then query that connection\n  \
socksec query --pid 1234 --fd 5                    query descriptor 5 of process 1234\n  \
socksec ls --insecure                              every connection that is not secured\n  \
socksec watch --json                               protection changes as JSON lines\n  \
socksec metrics --textfile /var/lib/prometheus/node-exporter   counts for Prometheus\n  \
socksec selftest                                   query loopback connections of this host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Query one socket: an inherited descriptor, or a connection made for the purpose.
    #[command(after_help = "Examples:\n  \
socksec query --fd 3 3<>/dev/tcp/10.1.0.2/5000\n  \
socksec query --pid 1234 --fd 5 --json\n  \
socksec query --fd 3 --json --protocol ipsec2 3<>/dev/tcp/10.1.0.2/5000\n  \
socksec query --connect 10.1.0.2:5000 --strict\n  \
socksec query --connect 10.1.0.2:4500 --udp --json")]
    Query(QueryArgs),
    /// List every TCP and UDP socket of this network namespace with its process, state,
    /// addresses, protection and peer identity (read with sock_diag netlink).
    #[command(
        after_help = "Sockets without a peer (TCP listeners, unconnected UDP sockets) \
have no connection to answer for: their protection is shown as '-' (in JSON: the ENOTCONN error a \
query of them gives).\n\n\
Examples:\n  \
socksec ls                                  everything, as a table\n  \
socksec ls --tcp --insecure                 TCP connections that are not secured\n  \
socksec ls --secured --addr 10.1.0.0/16     secured connections to or from 10.1.0.0/16\n  \
socksec ls --udp --port 4500                UDP sockets on port 4500 (local or peer)\n  \
socksec ls --listening                      listeners and unconnected UDP sockets\n  \
socksec ls --json | jq '.[] | select(.encrypted) | .socket.peer'\n\n\
Exit codes: 0 listed (a socket that could not be answered says why in its entry), 1 the listing \
failed (e.g. no CAP_NET_ADMIN), 2 usage error."
    )]
    Ls(ls::LsArgs),
    /// Print the host's protection changes as they happen: SAs up, down and rekeyed, policy
    /// changes, and the connections whose protection they change; one line per event.
    #[command(
        after_help = "Runs until SIGINT or SIGTERM (exit code 0). Needs CAP_NET_ADMIN \
for the kernel's notifications; the IKE daemon's events come over VICI ($SOCKSEC_VICI or \
strongSwan's default socket) when it is reachable. The connections are also answered again \
every --interval seconds, for the protection no event announces: TCP-MD5 keys, kernel TLS, \
WireGuard handshakes.\n\n\
Examples:\n  \
socksec watch                           follow changes as text\n  \
socksec watch --json | jq -c 'select(.event == \"child-rekey\")'\n  \
socksec watch --json --no-connections   kernel and IKE events only\n  \
socksec watch --interval 10             re-answer the connections every 10 s (0: only on events)\n\n\
Exit codes: 0 stopped by SIGINT or SIGTERM, 1 the events cannot be followed (e.g. no \
CAP_NET_ADMIN), 2 usage error."
    )]
    Watch(watch::WatchArgs),
    /// Describe the SAs an IPSEC2 SaLookupContext names (from `query --protocol ipsec2`), as
    /// the kernel and the IKE daemon have them now.
    #[command(after_help = "Examples:\n  \
socksec sa 00000007-0001-0004-ca17-c561cc79891a\n  \
socksec sa \"$(socksec query --fd 3 --protocol ipsec2 --json 3<>/dev/tcp/10.1.0.2/5000 | jq -r .ipsec2.sa_lookup_context)\" --json\n\n\
Exit codes: 0 found, 1 the SAs are gone or the lookup failed, 2 usage error.")]
    Sa {
        /// The SaLookupContext, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
        guid: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List every connection that a required-protection rule selects and that does not meet
    /// it, with its process, the rule's name and the answer's reason.
    #[command(after_help = "The rules file is TOML (docs/rules.md):\n\n  \
[[rule]]\n  name = \"db-encrypted\"\n  peer = \"10.20.0.0/16\"\n  peer_port = 5432\n  \
require = \"encrypted\"     # encrypted | secured | peer_id (with peer_id = \"CN=db-*\")\n\n\
A rule judges the verdict, never the SAs: a rekey is not a violation. Needs CAP_NET_ADMIN.\n\n\
Examples:\n  socksec check --rules /etc/socksec/rules.toml\n  \
socksec check --rules rules.toml --json | jq '.[].peer'\n\n\
Exit codes: 0 no violation, 1 at least one, 2 the rules file cannot be read or is invalid \
(the line and what is wrong are printed), 3 the connections cannot be listed.")]
    Check(check::CheckArgs),
    /// Count the connections by protocol, protection, mechanism and rule, in Prometheus's
    /// text format: printed, or written for node_exporter's textfile collector.
    #[command(
        after_help = "Metrics (bounded labels, never a series per connection):\n  \
socksec_connections{protocol=tcp|udp,protection=encrypted|integrity|none}\n  \
socksec_connections_by_mechanism{mechanism=ipsec|wireguard|ktls|tcp_md5}\n  \
socksec_connections_unanswered{protocol}\n  \
socksec_rule_violations{rule} (with --rules: what `socksec check` lists, counted per rule)\n  \
socksec_scrape_success, socksec_build_info{version}\n\n\
--textfile DIR writes DIR/socksec.prom atomically (a temporary file renamed); when the \
connections cannot be listed it still writes socksec_scrape_success 0. Needs CAP_NET_ADMIN. \
See docs/metrics.md.\n\n\
Examples:\n  socksec metrics\n  \
socksec metrics --rules /etc/socksec/rules.toml --textfile /var/lib/prometheus/node-exporter\n\n\
Exit codes: 0 written, 1 the textfile cannot be written, 2 the rules file cannot be read or is \
invalid, 3 the connections cannot be listed."
    )]
    Metrics(metrics::MetricsArgs),
    /// Connect to ADDR:PORT like netcat (stdin to the peer, the peer to stdout); with
    /// --secure, over IPsec that charon negotiates first, the peer authenticated as --target.
    #[command(
        after_help = "The query's answer for the connection goes to standard error. With \
--secure nothing is sent in clear: the socket requires ESP before it connects, a failed \
negotiation fails the command, and a connection that is not reported secured (or encrypted, \
with --encrypt) is closed. Needs CAP_NET_ADMIN, charon's VICI socket ($SOCKSEC_VICI) and \
/etc/socksec/secure.toml ($SOCKSEC_SECURE_CONFIG; docs/secure-sockets.md).\n\n\
Examples:\n  \
echo hello | socksec connect --secure --target host/sun.example 10.1.0.2:6000\n  \
socksec connect --secure --target 'C=CH, O=example, CN=sun' --raw-name --encrypt 10.1.0.2:6000\n  \
socksec connect --json 10.1.0.2:6000     plain TCP, and what protects it\n\n\
Exit codes: 0 the connection ended normally, 1 it could not be made or was refused, 2 usage \
error."
    )]
    Connect(connect::ConnectArgs),
    /// Listen on PORT like netcat and serve one connection; with --secure, only connections
    /// that arrive over IPsec that charon negotiated (others never reach the socket).
    #[command(
        after_help = "The query's answer for the accepted connection goes to standard \
error. With --secure the listener requires ESP before it binds, so a connection attempt in clear \
is dropped by the kernel; charon answers any peer that authenticates with the profile's \
credentials (accept_id narrows it).\n\n\
Examples:\n  \
socksec listen --secure 6000\n  \
socksec listen --secure --encrypt --json --addr 10.1.0.2 6000\n\n\
Exit codes: 0 the connection ended normally, 1 listening failed, 2 usage error."
    )]
    Listen(connect::ListenArgs),
    /// Open a TCP connection and a UDP exchange over loopback and query them: shows what this
    /// host's kernel reports without any setup.
    #[command(after_help = "Examples:\n  socksec selftest\n  socksec selftest --json")]
    Selftest {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub(crate) struct QueryArgs {
    /// Query the socket inherited on this descriptor (of process --pid, when given).
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "connect",
        conflicts_with = "connect"
    )]
    pub(crate) fd: Option<RawFd>,
    /// With --fd: take descriptor N of process P (pidfd_getfd; needs ptrace access to P).
    #[arg(long, value_name = "P", requires = "fd")]
    pub(crate) pid: Option<i32>,
    /// Connect to ADDR:PORT (TCP, or UDP with --udp) and query that socket.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) connect: Option<SocketAddr>,
    /// With --connect: use UDP instead of TCP.
    #[arg(long, requires = "connect")]
    pub(crate) udp: bool,
    /// The peer to ask about (required for UDP; ignored for TCP).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) peer: Option<SocketAddr>,
    /// The security protocol of the template.
    #[arg(long, value_enum, default_value_t = Protocol::Default)]
    pub(crate) protocol: Protocol,
    /// Ask for the peer's identity tokens (PeerTokenAccessMask = TOKEN_QUERY).
    #[arg(long)]
    pub(crate) tokens: bool,
    /// Refuse SECURED while socket policies of other sockets could apply.
    #[arg(long)]
    pub(crate) strict: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Protocol {
    Default,
    Ipsec,
    Ipsec2,
}

impl From<Protocol> for SecurityProtocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Default => SecurityProtocol::Default,
            Protocol::Ipsec => SecurityProtocol::Ipsec,
            Protocol::Ipsec2 => SecurityProtocol::Ipsec2,
        }
    }
}

/// `TOKEN_QUERY`, the access mask `--tokens` asks with.
pub(crate) const TOKEN_QUERY: u32 = 0x8;

fn main() -> ExitCode {
    // Man pages and completions for the package (scripts/deb-build), from this definition.
    let docs = socksec_clidoc::Docs {
        section: "1",
        completions: true,
    };
    if let Some(written) = socksec_clidoc::generate_if_asked(Cli::command, docs) {
        return socksec_clidoc::exit(written);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Query(args) => query::run(&args),
        Command::Ls(args) => ls::run(&args),
        Command::Watch(args) => watch::run(&args),
        Command::Selftest { json } => selftest::run(json),
        Command::Sa { guid, json } => sa::run(&guid, json),
        Command::Check(args) => check::run(&args),
        Command::Metrics(args) => metrics::run(&args),
        Command::Connect(args) => connect::connect(&args),
        Command::Listen(args) => connect::listen(&args),
    }
}
