use std::process::ExitCode;

use clap::CommandFactory;
use comfycontrol_exporter::cli::Cli;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();

    // One thread serves every stream: the work per snapshot is a few
    // microseconds, and a second worker thread mostly added wake-ups.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(comfycontrol_exporter::launch::run(&matches))
}
