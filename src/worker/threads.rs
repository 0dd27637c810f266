//! The worker's app threads: a fixed pool, each taking requests from one
//! channel and having the application serve them into a [`Sink`] that
//! streams the response back to the I/O thread. An error or a panic
//! becomes `500` (or an aborted response); the thread lives on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use super::app::App;
use super::shared::{Job, Shared};
use super::sink::Sink;

pub(crate) fn spawn(
    n: usize,
    app: Arc<dyn App>,
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let (app, jobs, shared) = (app.clone(), jobs.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("app-{i}"))
                .spawn(move || {
                    while let Ok(job) = jobs.recv() {
                        run_job(app.as_ref(), job, &shared);
                    }
                })
        })
        .collect()
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

fn run_job(app: &dyn App, mut job: Job, shared: &Arc<Shared>) {
    let Some(request) = job.request.take() else {
        return;
    };
    let trace = request.trace.clone();
    let head_only = request.method() == "HEAD";
    let sink = Sink::new(
        job,
        shared.clone(),
        trace.clone(),
        request.class.clone(),
        head_only,
    );
    if sink.is_cancelled() {
        return; // the sink, dropped, tells the I/O thread
    }
    trace.record('C', "");
    match catch_unwind(AssertUnwindSafe(|| app.serve(request, sink))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::error!("{}: application error: {e}", trace.id()),
        Err(p) => log::error!(
            "{}: application panicked: {}",
            trace.id(),
            panic_message(p.as_ref())
        ),
    }
}
