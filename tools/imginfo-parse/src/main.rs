fn main() -> std::process::ExitCode {
    common::cli::main::<imginfo_parse::Cli>()
}
