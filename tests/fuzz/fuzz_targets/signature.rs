//! The signature envelope (`source::verify`): the detached 64-byte Ed25519 signature and
//! the SubjectPublicKeyInfo PEM public key a host reads, and the PKCS#8 PEM secret key
//! `map publish --sign-key` reads, from arbitrary bytes.
//!
//! Input: a mode byte, the signature's and the key's lengths (u16, little-endian), the
//! signature, the key, then the map bytes. Modes: 0 everything arbitrary; 1 the map and
//! signature against the fixed public key; 2 the map signed with the fixed secret key,
//! then tampered; 3 the key bytes as a secret key.
//!
//! Asserts: no panic; only the fixed key's own signature of exactly these map bytes
//! verifies; every error is one escaped line of bounded length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rolecall::source::verify::{sign, verify, VerifyError};
use rolecall_fuzz::assert_line;

const SECRET: &[u8] = include_bytes!("../keys/fuzz.key");
const PUBLIC: &[u8] = include_bytes!("../keys/fuzz.pub");
const ERROR_MAX: usize = 1024;

struct Input<'a> {
    mode: u8,
    signature: &'a [u8],
    key: &'a [u8],
    map: &'a [u8],
}

fn cut(data: &[u8]) -> Option<Input<'_>> {
    let (&mode, rest) = data.split_first()?;
    let (lengths, rest) = rest.split_at_checked(4)?;
    let sig_len = usize::from(u16::from_le_bytes([lengths[0], lengths[1]])).min(rest.len());
    let (signature, rest) = rest.split_at(sig_len);
    let key_len = usize::from(u16::from_le_bytes([lengths[2], lengths[3]])).min(rest.len());
    let (key, map) = rest.split_at(key_len);
    Some(Input {
        mode,
        signature,
        key,
        map,
    })
}

fn checked<T>(result: Result<T, VerifyError>) -> Result<T, VerifyError> {
    if let Err(e) = &result {
        assert_line("verify error", &rolecall::text::chain(e), ERROR_MAX);
    }
    result
}

fn own_signature(map: &[u8]) -> Vec<u8> {
    sign(map, SECRET).expect("the fixed secret key signs")
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = cut(data) else {
        return;
    };
    match input.mode % 4 {
        0 => {
            let _ = checked(verify(input.map, input.signature, input.key));
        }
        1 => {
            if checked(verify(input.map, input.signature, PUBLIC)).is_ok() {
                assert_eq!(input.signature, own_signature(input.map), "a forged signature");
            }
        }
        2 => {
            let signature = own_signature(input.map);
            assert_eq!(signature.len(), 64);
            checked(verify(input.map, &signature, PUBLIC)).expect("its own signature verifies");
            // One bit of the map or of the signature changed, at a place the key bytes pick.
            let pick = input.key.iter().map(|b| usize::from(*b)).sum::<usize>();
            if !input.map.is_empty() {
                let mut map = input.map.to_vec();
                let at = pick % map.len();
                map[at] ^= 1 << (pick % 8);
                assert!(checked(verify(&map, &signature, PUBLIC)).is_err(), "tampered map");
            }
            let mut bad = signature.clone();
            bad[pick % 64] ^= 1 << (pick % 8);
            assert!(checked(verify(input.map, &bad, PUBLIC)).is_err(), "tampered signature");
            let mut longer = signature;
            longer.extend_from_slice(input.signature);
            if longer.len() > 64 {
                assert!(checked(verify(input.map, &longer, PUBLIC)).is_err(), "trailing bytes");
            }
        }
        _ => {
            if let Ok(signature) = checked(sign(input.map, input.key)) {
                assert_eq!(signature.len(), 64);
            }
        }
    }
});
