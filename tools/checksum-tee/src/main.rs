fn main() -> std::process::ExitCode {
    filter::cli::main::<checksum_tee::Cli>()
}
