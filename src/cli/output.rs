//! Standard output for commands people pipe (`demo | head -3`, `check-config | less`): a reader
//! that goes away ends the command quietly ([`StdoutClosed`]) instead of with a panic, and any
//! other write failure is an ordinary error.

use std::fmt;
use std::io::Write;

/// The reader of standard output went away (a broken pipe): stop, there is nobody to tell.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Writes to standard output and flushes; `Err(StdoutClosed)` on a broken pipe.
pub fn write(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("could not write to standard output")),
    }
}

/// `print!` that returns a `Result` (see [`write`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}

/// `println!` that returns a `Result` (see [`write`]).
macro_rules! outln {
    () => {
        $crate::cli::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// True when `error` is (or was caused by) a closed standard output.
pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<StdoutClosed>())
}
