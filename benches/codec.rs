//! Criterion benches of the pure codec: block seal/open at 4 KiB and 1 MiB per file, per-file key
//! derivation and name encryption, with RustCrypto's AES-GCM alongside as the reference.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use secretfs::crypto::content::{FileCipher, FileHeader, NonceDraw, BLOCK_OVERHEAD, BLOCK_SIZE};
use secretfs::crypto::keys::{KeyRing, MasterKey, SecretBytes};
use secretfs::crypto::names::NameCipher;
use std::hint::black_box;

fn blocks(c: &mut Criterion) {
    let header = FileHeader { file_id: [7; 16] };
    let cipher = FileCipher::new(&[9; 32], &header);
    let reference = aes_gcm::Aes256Gcm::new_from_slice(&[9; 32]).unwrap();
    let mut group = c.benchmark_group("block");
    for size in [BLOCK_SIZE, 1 << 20] {
        let plain = vec![0x5a; size];
        let nblocks = size / BLOCK_SIZE;
        let mut stored = vec![0u8; size + nblocks * BLOCK_OVERHEAD];
        group.throughput(Throughput::Bytes(size as u64));
        // As the data path seals: one sealer per request, in each build's nonce draw (the
        // default build's batched draw, and the fips build's draw inside each seal).
        for draw in [NonceDraw::Batched, NonceDraw::InSeal] {
            let cipher = FileCipher::with_nonce_draw(&[9; 32], &header, draw);
            let name = match draw {
                NonceDraw::Batched => "seal aws-lc-rs",
                NonceDraw::InSeal => "seal aws-lc-rs, nonce drawn in the seal (fips build)",
            };
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| {
                    let mut sealer = cipher.sealer(nblocks as u64);
                    for (i, (p, s)) in plain
                        .chunks(BLOCK_SIZE)
                        .zip(stored.chunks_mut(BLOCK_SIZE + BLOCK_OVERHEAD))
                        .enumerate()
                    {
                        sealer.seal(i as u64, false, p, s);
                    }
                })
            });
        }
        let mut out = vec![0u8; BLOCK_SIZE];
        group.bench_with_input(BenchmarkId::new("open aws-lc-rs", size), &size, |b, _| {
            b.iter(|| {
                for (i, s) in stored.chunks(BLOCK_SIZE + BLOCK_OVERHEAD).enumerate() {
                    black_box(cipher.open_block(i as u64, false, s, &mut out).unwrap());
                }
            })
        });
        // The same stored blocks opened by RustCrypto (format AAD: header ‖ index ‖ final flag);
        // like open_block it copies the ciphertext out before decrypting in place.
        group.bench_with_input(
            BenchmarkId::new("open RustCrypto aes-gcm", size),
            &size,
            |b, _| {
                b.iter(|| {
                    for (i, s) in stored.chunks(BLOCK_SIZE + BLOCK_OVERHEAD).enumerate() {
                        let mut aad = header.encode().to_vec();
                        aad.extend_from_slice(&(i as u64).to_be_bytes());
                        aad.push(0);
                        let (nonce, rest) = s.split_at(12);
                        let (ct, tag) = rest.split_at(rest.len() - 16);
                        out.copy_from_slice(ct);
                        reference
                            .decrypt_in_place_detached(
                                aes_gcm::Nonce::from_slice(nonce),
                                &aad,
                                &mut out,
                                aes_gcm::Tag::from_slice(tag),
                            )
                            .unwrap();
                        black_box(&out);
                    }
                })
            },
        );
        let mut buf = plain.clone();
        group.bench_with_input(
            BenchmarkId::new("seal RustCrypto aes-gcm", size),
            &size,
            |b, _| {
                b.iter(|| {
                    for chunk in buf.chunks_mut(BLOCK_SIZE) {
                        let nonce = aes_gcm::Nonce::from_slice(&[1; 12]);
                        black_box(
                            reference
                                .encrypt_in_place_detached(nonce, b"aad", chunk)
                                .unwrap(),
                        );
                    }
                })
            },
        );
    }
    group.finish();
}

fn keys_and_names(c: &mut Criterion) {
    let master = MasterKey::from_slice(&[1; 32]).unwrap();
    let ring = KeyRing::new(&master, &[2; 16]);
    // What opening a file costs the data path: HKDF into the thread's locked slot, then the
    // AES-GCM key schedule.
    let header = FileHeader { file_id: [3; 16] };
    c.bench_function("per-file cipher (HKDF expand + AES-GCM key set-up)", |b| {
        b.iter(|| {
            black_box(ring.with_file_key(black_box(&header.file_id), |key| {
                FileCipher::new(key, &header)
            }))
        })
    });
    let names = NameCipher::new(
        &SecretBytes::from_slice(&[4; 64]).unwrap(),
        &SecretBytes::from_slice(&[5; 32]).unwrap(),
    );
    c.bench_function("name encryption (AES-SIV, 20 bytes)", |b| {
        b.iter(|| black_box(names.encrypt_name(&[6; 16], b"quarterly-report.pdf")))
    });
    let stored = names.encrypt_name(&[6; 16], b"quarterly-report.pdf");
    c.bench_function("name decryption (AES-SIV, 20 bytes)", |b| {
        b.iter(|| black_box(names.decrypt_name(&[6; 16], stored.as_bytes()).unwrap()))
    });
}

criterion_group!(benches, blocks, keys_and_names);
criterion_main!(benches);
