fn main() -> std::process::ExitCode {
    filter::cli::main::<imginfo_parse::Cli>()
}
