fn main() -> std::process::ExitCode {
    filter::cli::main::<vhd_chain::Cli>()
}
