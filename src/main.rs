//! The `referral-sync` binary: all logic lives in the library.
fn main() -> std::process::ExitCode {
    referral_sync::cli::main()
}
