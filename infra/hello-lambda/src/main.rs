//! The reference the functions' cold start is measured against: the `http-basic-lambda`
//! example of aws-lambda-rust-runtime (a `lambda_http` function answering a fixed text,
//! with the runtime's default tracing subscriber), nothing of winmdm in it.

use lambda_http::{Body, Error, Request, Response, run, service_fn, tracing};

async fn function_handler(_event: Request) -> Result<Response<Body>, Error> {
    let resp = Response::builder()
        .status(200)
        .header("content-type", "text/html")
        .body("Hello AWS Lambda HTTP request".into())
        .map_err(Box::new)?;
    Ok(resp)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    run(service_fn(function_handler)).await
}
