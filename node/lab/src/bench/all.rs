//! `meridian-lab bench all`: every suite `make bench` runs, in one table (one header, each line
//! with its target and setup), or one JSON object per line with `--json`.

/// Options of `bench all`.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// A suite's options parsed from arguments, as its own command line would give them.
#[derive(clap::Parser)]
struct Parsed<A: clap::Args> {
    #[command(flatten)]
    args: A,
}

fn parse<A: clap::Args>(json: bool, argv: &[&str]) -> anyhow::Result<A> {
    use clap::Parser;
    let json = json.then_some("--json");
    let argv = std::iter::once("bench")
        .chain(json)
        .chain(argv.iter().copied());
    Ok(Parsed::<A>::try_parse_from(argv)?.args)
}

/// Runs the suites: the local path under both durabilities and four writer counts, the bytes
/// replication moves, two regions over QUIC, the consistency levels, and the C ABI.
pub fn run(args: Args) -> anyhow::Result<()> {
    let json = args.json;
    super::local::run(parse(json, &["--writers", "1,4,16,64"])?)?;
    super::local::run(parse(
        json,
        &[
            "--durability",
            "sync",
            "--ops",
            "4000",
            "--writers",
            "1,4,16,64",
            "--overwrite-keys",
            "0",
        ],
    )?)?;
    super::replication_bytes::run(parse(json, &[])?)?;
    super::replication::run(parse(json, &[])?)?;
    super::consistency::run(parse(json, &[])?)?;
    super::ffi::run(parse(json, &[])?)?;
    Ok(())
}
