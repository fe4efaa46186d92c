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

    /// Whether `f` drew from the DRBG through our own `fill_random`.
    fn draws_our_own(f: impl FnOnce()) -> bool {
        use crate::crypto::keys::OUR_DRAWS;
        let before = OUR_DRAWS.with(|n| n.get());
        f();
        OUR_DRAWS.with(|n| n.get()) != before
    }

    /// In every build, each seal whose nonce §5b says aws-lc draws inside the seal call makes no
    /// draw of ours (so in the fips build the indicator's approval below is the seal's own).
    #[test]
    fn seals_leave_their_nonce_to_aws_lc_except_the_batched_draw() {
        use crate::crypto::content::{FileCipher, FileHeader, NonceDraw, BLOCK_OVERHEAD};
        use crate::crypto::keys::{wrap_key, SecretBytes};
        use crate::crypto::names::NameCipher;
        let (kek, key) = (SecretBytes::random(), SecretBytes::random());
        assert!(
            !draws_our_own(|| drop(wrap_key(&kek, &key, b"aad"))),
            "key wrap"
        );
        let names = NameCipher::new(&SecretBytes::random(), &SecretBytes::random());
        assert!(
            !draws_our_own(|| drop(names.seal_xattr_value("user.x", b"v"))),
            "xattr value"
        );
        let mut stored = vec![0u8; 10 + BLOCK_OVERHEAD];
        let header = FileHeader::new_random();
        let in_seal = FileCipher::with_nonce_draw(&[5; 32], &header, NonceDraw::InSeal);
        assert!(
            !draws_our_own(|| in_seal.seal_block(0, true, &[6; 10], &mut stored)),
            "content block, nonce drawn in the seal"
        );
        // The probe can say yes: the default build's batched draw is ours.
        let batched = FileCipher::with_nonce_draw(&[5; 32], &header, NonceDraw::Batched);
        assert!(draws_our_own(|| batched.seal_block(
            0,
            true,
            &[6; 10],
            &mut stored
        )));
        assert_eq!(
            crate::crypto::content::NONCE_DRAW == NonceDraw::InSeal,
            FIPS_BUILD
        );
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
    fn the_module_approves_every_service_the_data_path_and_the_unlock_use() {
        use crate::crypto::content::{FileCipher, FileHeader, NonceDraw, BLOCK_OVERHEAD};
        use crate::crypto::keys::{hkdf_extract, unwrap_key, wrap_key, HkdfPrk, SecretBytes};
        use crate::crypto::names::NameCipher;
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
        // FIPS 140-3 IG C.H: a GCM seal is approved only with an IV made inside the module's
        // seal call, which is how every seal of ours draws its nonce (RandomizedNonceKey). A key
        // wrap and an xattr seal are one call each: that they make no DRBG call of ours (which
        // would count as approved too) is checked by the test above.
        let (kek, key) = (SecretBytes::random(), SecretBytes::random());
        let mut wrapped = Vec::new();
        assert!(
            approved(|| wrapped = wrap_key(&kek, &key, b"aad")),
            "GCM seal of a key wrap"
        );
        assert!(
            approved(|| drop(unwrap_key(&kek, &wrapped, b"aad").unwrap())),
            "GCM open of a key wrap"
        );
        assert!(approved(|| drop(SecretBytes::<32>::random())), "DRBG");
        // The data path's seal, as fs/files.rs makes it: the second block of a request, so a
        // nonce drawn by us beforehand (an approved DRBG call) cannot pass for an approved seal.
        let cipher = FileCipher::new(&[5; 32], &FileHeader::new_random());
        let mut stored = vec![0u8; 10 + BLOCK_OVERHEAD];
        let mut sealer = cipher.sealer(2);
        sealer.seal(0, false, &[6; 10], &mut stored);
        assert!(
            approved(|| sealer.seal(1, true, &[6; 10], &mut stored)),
            "GCM seal of a content block"
        );
        let mut out = [0u8; 10];
        assert!(
            approved(|| assert_eq!(cipher.open_block(1, true, &stored, &mut out), Ok(10))),
            "GCM open of a content block"
        );
        // The other builds' batched draw passes the nonce in, which the module does not count
        // (aws-lc locks the indicator around its own in-seal DRBG call, so the approvals above
        // are the seals'). The batch is drawn by the first seal, outside the probe, as the DRBG
        // call is an approved service of its own.
        let batched =
            FileCipher::with_nonce_draw(&[5; 32], &FileHeader::new_random(), NonceDraw::Batched);
        let mut sealer = batched.sealer(2);
        sealer.seal(0, false, &[6; 10], &mut stored);
        assert!(!approved(|| sealer.seal(1, true, &[6; 10], &mut stored)));
        let names = NameCipher::new(&SecretBytes::random(), &SecretBytes::random());
        let mut value = Vec::new();
        assert!(
            approved(|| value = names.seal_xattr_value("user.x", b"value")),
            "GCM seal of an xattr value"
        );
        assert!(
            approved(|| drop(names.open_xattr_value("user.x", &value).unwrap())),
            "GCM open of an xattr value"
        );
    }
}
