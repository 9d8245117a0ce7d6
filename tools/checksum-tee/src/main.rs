fn main() -> std::process::ExitCode {
    common::cli::main::<checksum_tee::Cli>()
}
