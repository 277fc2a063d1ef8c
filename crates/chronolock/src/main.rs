//! The `chronolock` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chronolock_sim::RunError;
use clap::{Parser, Subcommand};

/// chronolock: self-hosted door access control built on trustworthy wall-clock time.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate door controllers.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
}

#[derive(Subcommand)]
enum SimCommand {
    /// Play a scenario (JSON Lines) in virtual time and print its events as JSON Lines.
    Run {
        /// The scenario file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sim {
            command: SimCommand::Run { file },
        } => sim_run(&file),
    }
}

fn sim_run(file: &std::path::Path) -> ExitCode {
    match chronolock_sim::run_file(file) {
        Ok((events, notes)) => {
            for note in notes.0 {
                eprintln!("note: {note}");
            }
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(events.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(RunError::Scenario(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e @ RunError::Stuck(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
