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
}
