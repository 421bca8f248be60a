//! A small deterministic mutation fuzzer that runs on the stable toolchain as an ordinary
//! test: real messages are mutated (bit flips, byte inserts and deletes, duplicated and
//! spliced ranges, truncation, dictionary tokens, long repetitions) and fed to a parser,
//! alongside random bytes and random token soups.
//!
//! Shared by `shared/wire/tests/fuzz.rs` and `tests/tests/fuzz.rs` (included by path).
//!
//! - `WINMDM_FUZZ_ITERATIONS=n` runs `n` inputs per target instead of the default (fewer
//!   for targets whose inputs are costly: see [`iterations_costing`]).
//! - `WINMDM_FUZZ_SEED=s` changes the seed (default fixed, so CI runs are reproducible).
//! - `WINMDM_FUZZ_ONLY=i` replays iteration `i` alone (with the same seed).
//!
//! Each input is derived from the seed, the target and its iteration number alone, so a
//! failure report (`target`, seed, iteration) reproduces with `WINMDM_FUZZ_SEED=s
//! WINMDM_FUZZ_ONLY=i`; the failing input is also written to the temp directory.

#![allow(dead_code)]

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

/// SplitMix64: tiny, fast and good enough to drive mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Small numbers mostly, occasionally large ones: lengths and repeat counts.
    pub fn size(&mut self, max: usize) -> usize {
        let cap = match self.below(10) {
            0..=5 => 8,
            6..=8 => 256,
            _ => max,
        };
        self.below(cap.min(max) + 1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Bytes that tend to matter to parsers.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x09, 0x0a, 0x0d, 0x20, b'<', b'>', b'&', b';', b'#', b'"', b'\'', b'=', b'/',
    b':', b'!', b'?', b'[', b']', b'-', 0x7f, 0x80, 0xbf, 0xc0, 0xef, 0xfe, 0xff,
];

/// How to build inputs for one target.
pub struct Mutator<'a> {
    /// Real, valid inputs to start from.
    pub seeds: &'a [Vec<u8>],
    /// Tokens worth inserting (XML syntax, DER headers, JSON punctuation…).
    pub dictionary: &'a [&'a [u8]],
    /// Inputs are cut to this length.
    pub max_len: usize,
}

impl Mutator<'_> {
    /// One input: mostly a mutated seed, sometimes random bytes or a token soup.
    pub fn input(&self, rng: &mut Rng) -> Vec<u8> {
        let mut buf = match rng.below(32) {
            0 => {
                let n = rng.size(4096);
                rng.bytes(n)
            }
            1 | 2 => self.soup(rng),
            _ => rng.pick(self.seeds).clone(),
        };
        // Often a single mutation, so that most inputs stay close to valid and reach the
        // code behind the syntax checks; sometimes a pile of them.
        let rounds = if rng.one_in(2) { 1 } else { 1 + rng.size(12) };
        for _ in 0..rounds {
            self.mutate(rng, &mut buf);
        }
        buf.truncate(self.max_len);
        buf
    }

    /// Dictionary tokens and random short runs, concatenated.
    fn soup(&self, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..1 + rng.size(64) {
            if self.dictionary.is_empty() || rng.one_in(4) {
                let n = 1 + rng.size(8);
                out.extend(rng.bytes(n));
            } else {
                let token = self.dictionary[rng.below(self.dictionary.len())];
                out.extend_from_slice(token);
            }
        }
        out
    }

    fn range(rng: &mut Rng, len: usize) -> (usize, usize) {
        if len == 0 {
            return (0, 0);
        }
        let start = rng.below(len);
        let n = rng.size(len - start);
        (start, start + n)
    }

    /// A random position just after (or at) an occurrence of `byte`, if there is one.
    fn after(rng: &mut Rng, buf: &[u8], byte: u8, offset: usize) -> Option<usize> {
        if buf.is_empty() {
            return None;
        }
        let from = rng.below(buf.len());
        let i = buf[from..]
            .iter()
            .position(|&b| b == byte)
            .map(|i| from + i)
            .or_else(|| buf.iter().position(|&b| b == byte))?;
        Some(i + offset)
    }

    /// A range from a `<` to just after a later `>`: a run of markup, often whole elements.
    fn markup_range(rng: &mut Rng, buf: &[u8]) -> Option<(usize, usize)> {
        let start = Self::after(rng, buf, b'<', 0)?;
        let span = 1 + rng.size(buf.len() - start);
        let end = buf[start..]
            .iter()
            .take(span)
            .rposition(|&b| b == b'>')
            .map(|i| start + i + 1)?;
        Some((start, end))
    }

    pub fn mutate(&self, rng: &mut Rng, buf: &mut Vec<u8>) {
        let len = buf.len();
        let at = if len == 0 { 0 } else { rng.below(len + 1) };
        match rng.below(18) {
            // Structure-aware moves: a token after a tag (elements, text, comments) or
            // inside a start tag (attributes), and runs of markup duplicated after a tag.
            14 | 15 if !self.dictionary.is_empty() => {
                let token = self.dictionary[rng.below(self.dictionary.len())];
                let pos = if token.first() == Some(&b' ') {
                    Self::after(rng, buf, b'>', 0).map(|i| {
                        if i > 0 && buf[i - 1] == b'/' {
                            i - 1
                        } else {
                            i
                        }
                    })
                } else {
                    Self::after(rng, buf, b'>', 1)
                };
                let pos = pos.unwrap_or(at);
                let times = if rng.one_in(8) { 1 + rng.size(2048) } else { 1 };
                buf.splice(pos..pos, token.repeat(times));
            }
            16 => {
                if let Some((s, e)) = Self::markup_range(rng, buf) {
                    let chunk = buf[s..e].to_vec();
                    let times = 1 + rng.size(32);
                    let pos = Self::after(rng, buf, b'>', 1).unwrap_or(e);
                    buf.splice(pos..pos, chunk.repeat(times));
                }
            }
            17 => {
                if let Some((s, e)) = Self::markup_range(rng, buf) {
                    buf.drain(s..e);
                }
            }
            // Flip a bit.
            0 if len > 0 => {
                let i = rng.below(len);
                buf[i] ^= 1 << rng.below(8);
            }
            // Overwrite a byte with an interesting one.
            1 if len > 0 => {
                let i = rng.below(len);
                buf[i] = *rng.pick(INTERESTING);
            }
            // Insert random bytes.
            2 => {
                let n = 1 + rng.size(32);
                let bytes = rng.bytes(n);
                buf.splice(at..at, bytes);
            }
            // Delete a range.
            3 if len > 0 => {
                let (s, e) = Self::range(rng, len);
                buf.drain(s..e);
            }
            // Duplicate a range, possibly many times.
            4 if len > 0 => {
                let (s, e) = Self::range(rng, len);
                let chunk = buf[s..e].to_vec();
                let times = 1 + rng.size(64);
                let copies: Vec<u8> = chunk.repeat(times);
                buf.splice(at..at, copies);
            }
            // Copy a range over another place.
            5 if len > 1 => {
                let (s, e) = Self::range(rng, len);
                let chunk = buf[s..e].to_vec();
                let dst = rng.below(len);
                let end = (dst + chunk.len()).min(len);
                buf[dst..end].copy_from_slice(&chunk[..end - dst]);
            }
            // Splice: our head with another seed's tail.
            6 => {
                let other = rng.pick(self.seeds);
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    buf.truncate(at);
                    buf.extend_from_slice(&other[from..]);
                }
            }
            // Truncate.
            7 if len > 0 => buf.truncate(rng.below(len)),
            // Insert a dictionary token.
            8..=10 if !self.dictionary.is_empty() => {
                let token = rng.pick(self.dictionary).to_vec();
                buf.splice(at..at, token);
            }
            // Repeat a dictionary token many times (huge attribute lists, deep nesting…).
            11 if !self.dictionary.is_empty() => {
                let token = rng.pick(self.dictionary);
                let times = 1 + rng.size(4096);
                let run = token.repeat(times);
                buf.splice(at..at, run);
            }
            // Swap two bytes.
            12 if len > 1 => {
                let (i, j) = (rng.below(len), rng.below(len));
                buf.swap(i, j);
            }
            // Replace a range with an interesting byte run.
            _ if len > 0 => {
                let (s, e) = Self::range(rng, len);
                let b = *rng.pick(INTERESTING);
                buf[s..e].fill(b);
            }
            _ => {
                let n = 1 + rng.size(16);
                buf.extend_from_slice(&rng.bytes(n));
            }
        }
    }
}

/// Iterations per target: `WINMDM_FUZZ_ITERATIONS`, or the default.
pub fn iterations(default: usize) -> usize {
    iterations_costing(default, 1)
}

/// Iterations for a target whose inputs each cost about `cost` times a parser call (a
/// store write, a password hash): `WINMDM_FUZZ_ITERATIONS / cost`, or the default.
pub fn iterations_costing(default: usize, cost: usize) -> usize {
    std::env::var("WINMDM_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(default, |n| (n / cost.max(1)).max(1))
}

pub fn base_seed() -> u64 {
    std::env::var("WINMDM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0x5eed_f022)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a run did, for the report line.
#[derive(Debug, Default)]
pub struct Stats {
    pub inputs: usize,
    pub accepted: usize,
    pub bytes: usize,
    pub slowest: Duration,
    pub slowest_len: usize,
    pub slowest_iteration: usize,
}

/// Feeds `iterations` inputs to `check`, which returns whether the parser accepted the
/// input and panics on any violated property. A panic is reported with the seed, the
/// iteration and a copy of the input in the temp directory, then re-raised.
pub fn run(
    target: &str,
    iterations: usize,
    mutator: &Mutator<'_>,
    mut check: impl FnMut(&[u8]) -> bool,
) -> Stats {
    let seed = base_seed();
    let mut stats = Stats::default();
    // `WINMDM_FUZZ_ONLY=i` replays iteration i alone.
    let only: Option<usize> = std::env::var("WINMDM_FUZZ_ONLY")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let range = match only {
        Some(i) => i..i + 1,
        None => 0..iterations,
    };
    for i in range {
        let mut rng = Rng::new(seed ^ fnv(target) ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let input = mutator.input(&mut rng);
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(accepted) => {
                let took = started.elapsed();
                if took > stats.slowest {
                    stats.slowest = took;
                    stats.slowest_len = input.len();
                    stats.slowest_iteration = i;
                }
                stats.inputs += 1;
                stats.bytes += input.len();
                stats.accepted += usize::from(accepted);
            }
            Err(panic) => {
                let path = std::env::temp_dir().join(format!("winmdm-fuzz-{target}-{i}.bin"));
                let _ = std::fs::write(&path, &input);
                eprintln!(
                    "fuzz target {target} failed: WINMDM_FUZZ_SEED={seed} iteration {i}; \
                     input ({} bytes) saved to {}",
                    input.len(),
                    path.display()
                );
                resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "fuzz {target}: {} inputs ({} accepted, {} KiB), slowest {:?} on {} bytes (iteration {})",
        stats.inputs,
        stats.accepted,
        stats.bytes / 1024,
        stats.slowest,
        stats.slowest_len,
        stats.slowest_iteration
    );
    stats
}

/// Asserts an error explains itself.
pub fn assert_clear_error(target: &str, e: &dyn std::fmt::Display) {
    let msg = e.to_string();
    assert!(!msg.trim().is_empty(), "{target}: an error with no message");
}
