use std::process::ExitCode;

use clap::CommandFactory;
use comfycontrol_exporter::cli::Cli;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
