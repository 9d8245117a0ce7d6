//! Work on `jobs` threads with the results in input order: for filters
//! whose per-record work waits on the network (glance-load, the Glance
//! audit), while the output stays a deterministic stream.

use std::collections::BTreeMap;
use std::sync::{Mutex, mpsc};

/// Run `work` over `inputs` on `jobs` threads and hand each result to
/// `emit` in input order. At most `4 * jobs` inputs are in flight, so
/// memory stays bounded however long the stream. Feeding stops at the
/// first `Err` input, an `emit` error, or a pending signal (the work in
/// flight is finished and emitted first); the input error is returned.
pub fn ordered<I, O>(
    jobs: usize,
    inputs: impl Iterator<Item = anyhow::Result<I>>,
    work: &(dyn Fn(I) -> O + Sync),
    emit: &mut dyn FnMut(O) -> anyhow::Result<()>,
) -> anyhow::Result<()>
where
    I: Send,
    O: Send,
{
    let jobs = jobs.max(1);
    let (todo_tx, todo_rx) = mpsc::sync_channel::<(u64, I)>(jobs);
    let todo_rx = Mutex::new(todo_rx);
    let (done_tx, done_rx) = mpsc::channel::<(u64, O)>();
    std::thread::scope(|s| -> anyhow::Result<()> {
        for _ in 0..jobs {
            let done_tx = done_tx.clone();
            let todo_rx = &todo_rx;
            s.spawn(move || {
                loop {
                    let next = match todo_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, item)) = next else { return };
                    if done_tx.send((seq, work(item))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut ready: BTreeMap<u64, O> = BTreeMap::new();
        let mut next_out = 0u64;
        let mut sent = 0u64;
        let mut flush = |ready: &mut BTreeMap<u64, O>, next_out: &mut u64| -> anyhow::Result<()> {
            while let Some(o) = ready.remove(next_out) {
                emit(o)?;
                *next_out += 1;
            }
            Ok(())
        };
        let mut failed = None;
        {
            let todo_tx = todo_tx;
            for input in inputs {
                // Bound what is in flight: wait for the oldest to finish.
                while sent - next_out >= 4 * jobs as u64 {
                    let Ok((seq, o)) = done_rx.recv() else { break };
                    ready.insert(seq, o);
                    flush(&mut ready, &mut next_out)?;
                }
                let item = match input {
                    Ok(i) => i,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                if todo_tx.send((sent, item)).is_err() {
                    anyhow::bail!("the worker threads stopped");
                }
                sent += 1;
                while let Ok((seq, o)) = done_rx.try_recv() {
                    ready.insert(seq, o);
                }
                flush(&mut ready, &mut next_out)?;
                if crate::signal::pending().is_some() {
                    break;
                }
            }
        }
        for (seq, o) in done_rx.iter() {
            ready.insert(seq, o);
            flush(&mut ready, &mut next_out)?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_input_order() {
        for jobs in [1, 3, 8] {
            let mut out = Vec::new();
            let inputs = (0..100u64).map(Ok);
            ordered(
                jobs,
                inputs,
                &|i: u64| {
                    // Later inputs finish first.
                    std::thread::sleep(std::time::Duration::from_micros((100 - i) * 20));
                    i * 2
                },
                &mut |o| {
                    out.push(o);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn an_input_error_stops_the_feed_after_the_work_in_flight() {
        let mut out = Vec::new();
        let inputs = (0..10u64).map(|i| {
            if i == 5 {
                Err(anyhow::anyhow!("bad input"))
            } else {
                Ok(i)
            }
        });
        let r = ordered(2, inputs, &|i: u64| i, &mut |o| {
            out.push(o);
            Ok(())
        });
        assert!(r.is_err());
        assert_eq!(out, [0, 1, 2, 3, 4]);
    }
}
