//! The `fips` build's promise checked at run time: every aws-lc call runs in the validated
//! module in FIPS mode, or no command runs at all (docs/SECURITY.md, "FIPS build").

/// Whether this binary was built for FIPS (the `fips` feature: aws-lc-fips-sys).
pub const FIPS_BUILD: bool = cfg!(feature = "fips");

/// In a `fips` build, the module's own description once aws-lc reports FIPS mode (its power-on
/// self-tests passed), or why not; in other builds `Ok(None)`: there is nothing to check.
pub fn require_fips_mode() -> Result<Option<String>, String> {
    if !FIPS_BUILD {
        return Ok(None);
    }
    aws_lc_rs::try_fips_mode()
        .map_err(|e| format!("this is a FIPS build but aws-lc is not in FIPS mode ({e})"))?;
    // The FIPS module number names the certificate line; the release disambiguates builds of it.
    let module = aws_lc_rs::fips_version().map_or("?".into(), |v| v.to_string());
    Ok(Some(format!(
        "AWS-LC FIPS module {module} (AWS-LC {}) in FIPS mode",
        aws_lc_rs::awslc_version()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_and_the_linked_module_agree_on_fips_mode() {
        // A non-FIPS aws-lc reports no FIPS mode, so this also catches a build whose feature
        // wiring links a module other than the one it claims.
        assert_eq!(aws_lc_rs::try_fips_mode().is_ok(), FIPS_BUILD);
        match (FIPS_BUILD, require_fips_mode()) {
            (true, Ok(Some(module))) => {
                assert!(module.starts_with("AWS-LC FIPS module "), "{module}");
                println!("{module}");
            }
            (false, Ok(None)) => {}
            (fips_build, other) => panic!("fips build: {fips_build}, check: {other:?}"),
        }
    }

    /// Whether aws-lc's service indicator counted an approved service while `f` ran.
    #[cfg(feature = "fips")]
    fn approved(f: impl FnOnce()) -> bool {
        // SAFETY: both calls only read the calling thread's indicator counter.
        let before = unsafe { aws_lc_fips_sys::FIPS_service_indicator_before_call() };
        f();
        let after = unsafe { aws_lc_fips_sys::FIPS_service_indicator_after_call() };
        before != after
    }

    /// What docs/SECURITY.md §5b says of each service, as the module itself reports it.
    #[cfg(feature = "fips")]
    #[test]
    fn the_module_approves_the_derivations_macs_and_opens_but_not_seals_with_our_nonces() {
        use crate::crypto::content::{FileCipher, FileHeader, BLOCK_OVERHEAD};
        use crate::crypto::keys::{hkdf_extract, unwrap_key, wrap_key, HkdfPrk, SecretBytes};
        use aws_lc_rs::{hkdf, hmac};
        // The probe can say no: HKDF with an empty salt is not approved.
        assert!(!approved(|| hkdf::Salt::new(hkdf::HKDF_SHA256, &[])
            .extract(&[2; 32])
            .expand(&[b"x"], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut [0u8; 32]))
            .unwrap()));
        assert!(
            approved(|| drop(hkdf_extract(&[1; 16], &[2; 32]))),
            "HKDF-Extract"
        );
        let prk = HkdfPrk::extract(&[1; 16], &[2; 32]);
        assert!(
            approved(|| prk.expand(&[b"secretfs/v1/content", &[3; 16]], &mut [0u8; 32])),
            "HKDF-Expand"
        );
        let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &[4; 32]);
        assert!(
            approved(|| {
                let _tag = hmac::sign(&mac_key, b"config");
            }),
            "HMAC"
        );
        let (kek, key) = (SecretBytes::random(), SecretBytes::random());
        let wrapped = wrap_key(&kek, &key, b"aad");
        assert!(
            approved(|| drop(unwrap_key(&kek, &wrapped, b"aad").unwrap())),
            "GCM open"
        );
        // Random numbers are an approved service of their own (and so `wrap_key`, which draws
        // its nonce, counts as approved as a whole).
        assert!(approved(|| drop(SecretBytes::<32>::random())), "DRBG");
        // FIPS 140-3 IG C.H: a GCM seal is approved only with an IV made inside the module's
        // seal call; ours are drawn from the module's DRBG beforehand (§5b says so). This is
        // the data path's seal as fs/files.rs calls it, with a nonce from `fresh_nonces`.
        let cipher = FileCipher::new(&[5; 32], &FileHeader::new_random());
        let mut stored = vec![0u8; 10 + BLOCK_OVERHEAD];
        assert!(!approved(|| cipher.seal_block_with_nonce(
            0,
            true,
            &[6; 10],
            [7; 12],
            &mut stored
        )));
    }
}
