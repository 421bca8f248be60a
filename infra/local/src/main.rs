//! `winmdm-local`: see the crate docs and `winmdm-local --help`.

use clap::Parser;

// The allocator the Lambda functions ship with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    winmdm_http::logging::init();
    let opts = winmdm_local::Options::parse();
    match winmdm_local::start(opts).await {
        Ok(server) => {
            let base = server.base_url.as_str().trim_end_matches('/').to_owned();
            println!("winmdm-local listening on {}", server.addr);
            println!("  discovery URL: {base}/EnrollmentServer/Discovery.svc");
            println!("  admin API:     {base}/admin/v1/");
            println!("  web console:   {base}/console/ (sign in with the admin token)");
            println!("  admin token:   {}", server.admin_token_path().display());
            server.wait_for_ctrl_c().await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("winmdm-local: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
