fn main() -> std::process::ExitCode {
    common::cli::main::<vhd_chain::Cli>()
}
