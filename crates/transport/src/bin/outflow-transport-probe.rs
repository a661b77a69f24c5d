//! A test probe: either end of the relay link as its own process, so tests can SIGKILL it.
//!
//! ```text
//! outflow-transport-probe send --spool DIR --connect ADDR --certs DIR --batches N --max-len B [--cap BYTES_PER_SEC]
//! outflow-transport-probe recv --listen ADDR --certs DIR --log FILE --max-len B
//! outflow-transport-probe certs --out DIR
//! ```
//!
//! `send` appends batches 1..=N (payloads from `outflow_transport::testing::payload`) to its
//! spool, resuming where a killed run stopped, ships them and exits 0 once all are
//! acknowledged. `recv` checks every payload and appends each delivered sequence number as a
//! line to its log, which is also where it resumes from after a kill.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use outflow_spool::{FsyncPolicy, Spool, SpoolConfig};
use outflow_transport::certs::CertFiles;
use outflow_transport::testing::payload;
use outflow_transport::{BatchSink, Delivered, LinkConfig, Receiver, Sender, SinkError, TlsConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Result<&str, Error> {
        let flag = format!("--{name}");
        let at = self
            .0
            .iter()
            .position(|a| *a == flag)
            .ok_or(format!("missing {flag}"))?;
        Ok(self.0.get(at + 1).ok_or(format!("{flag} needs a value"))?)
    }
    fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)?
            .parse()
            .map_err(|e| format!("--{name}: {e}").into())
    }
}

fn link() -> LinkConfig {
    LinkConfig {
        keep_alive: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(2),
        initial_rtt: Duration::from_millis(10),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        window: outflow_transport::SenderWindow {
            max_bytes: 4 << 20,
            max_batches: 256,
        },
        ..LinkConfig::default()
    }
}

/// Appends each delivered sequence number to a log, after checking the payload.
struct LogSink {
    file: File,
    last: u64,
    max_len: usize,
}

impl LogSink {
    fn open(path: PathBuf, max_len: usize) -> Result<LogSink, Error> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        // A line cut by a kill was never acknowledged: drop it, the batch comes again.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            file.set_len(whole as u64)?;
            file.seek(SeekFrom::End(0))?;
        }
        let last = text[..whole].lines().last().map_or(Ok(0), str::parse)?;
        Ok(LogSink {
            file,
            last,
            max_len,
        })
    }
}

impl BatchSink for LogSink {
    async fn last_durable(&mut self) -> Result<u64, SinkError> {
        Ok(self.last)
    }

    async fn deliver(&mut self, seq: u64, got: Bytes) -> Result<Delivered, SinkError> {
        if seq != self.last + 1 {
            return Err(format!("delivered {seq} after {}", self.last).into());
        }
        if got != payload(seq, self.max_len) {
            return Err(format!("payload of batch {seq} differs from what was sent").into());
        }
        // One write per line: a kill leaves a whole line or a cut one, never two half lines.
        // No fsync: SIGKILL keeps the page cache, and power loss is the spool tests' business.
        self.file.write_all(format!("{seq}\n").as_bytes())?;
        self.last = seq;
        Ok(Delivered::Durable)
    }
}

async fn send(args: &Args) -> Result<(), Error> {
    let certs = CertFiles::in_dir(args.get("certs")?.as_ref());
    let batches: u64 = args.parse("batches")?;
    let max_len: usize = args.parse("max-len")?;
    let spool = Spool::open(SpoolConfig {
        fsync: FsyncPolicy::DangerNever,
        segment_bytes: 1 << 20,
        max_bytes: 64 << 20,
        ..SpoolConfig::new(args.get("spool")?)
    })?;
    let addr: SocketAddr = args.parse("connect")?;
    let mut sender = Sender::new(
        spool.clone(),
        &TlsConfig::client_from(&certs),
        addr,
        "localhost",
        link(),
    )?;
    if let Ok(cap) = args.parse::<u64>("cap") {
        sender = sender.with_bandwidth(outflow_transport::Bandwidth {
            bytes_per_sec: cap,
            burst: 256 << 10,
        });
    }
    let appender = {
        let spool = spool.clone();
        tokio::spawn(async move {
            while spool.next_seq() <= batches {
                let seq = spool.next_seq();
                spool.append(payload(seq, max_len)).await?;
            }
            Ok::<_, outflow_spool::SpoolError>(())
        })
    };
    let mut acked = spool.subscribe_appended();
    tokio::select! {
        result = sender.run() => result?,
        () = async {
            while spool.acked() < batches {
                let _ = tokio::time::timeout(Duration::from_millis(20), acked.changed()).await;
            }
        } => {}
    }
    appender.await??;
    println!("sent {batches}");
    Ok(())
}

async fn recv(args: &Args) -> Result<(), Error> {
    let certs = CertFiles::in_dir(args.get("certs")?.as_ref());
    let sink = LogSink::open(args.get("log")?.into(), args.parse("max-len")?)?;
    let receiver = Receiver::bind(
        args.parse("listen")?,
        &TlsConfig::server_from(&certs),
        link(),
    )?;
    receiver.run(sink).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args(std::env::args().skip(1).collect());
    let result = match args.0.first().map(String::as_str) {
        Some("send") => send(&args).await,
        Some("recv") => recv(&args).await,
        Some("certs") => {
            outflow_transport::certs::generate(args.get("out").unwrap_or(".").as_ref(), &[])
                .map(drop)
                .map_err(Into::into)
        }
        _ => Err("usage: outflow-transport-probe send|recv --flag value...".into()),
    };
    if let Err(e) = result {
        eprintln!("outflow-transport-probe: {e}");
        std::process::exit(1);
    }
}
