//! `outflow certs`: a CA, a server certificate and a client certificate for the relay link, for
//! quick set-ups. The generation itself lives in `outflow_transport::certs`, where the tests
//! and the relay reuse it.

use std::path::PathBuf;

use anyhow::Context;
use outflow_transport::certs::{self, DEFAULT_SANS};

/// Arguments of `outflow certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem and
    /// client-key.pem into (created if missing; existing files are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Extra name or IP address for the server certificate (repeatable); 127.0.0.1 and
    /// localhost are always included.
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
}

/// Writes the six files and says where they went.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let files = certs::generate(&args.out, &args.sans)
        .with_context(|| format!("generating certificates in {}", args.out.display()))?;
    let mut names: Vec<&str> = DEFAULT_SANS.to_vec();
    names.extend(args.sans.iter().map(String::as_str));
    println!("wrote to {}:", args.out.display());
    println!("  ca.pem, ca-key.pem          CA (keep ca-key.pem off the relay hosts)");
    println!(
        "  server.pem, server-key.pem  receiver, valid for {}",
        names.join(", ")
    );
    println!("  client.pem, client-key.pem  sender");
    debug_assert_eq!(files, certs::CertFiles::in_dir(&args.out));
    Ok(())
}
