//! The client against the RMM model.

use alloc::vec;

use crate::abi::{RESULT_REGS, SMCCC_NOT_SUPPORTED};
use crate::model::{HostBehaviour, ModelConfig, RmmModel};
use crate::*;

const G: u64 = GRANULE_SIZE;
const RAM: u64 = 0x4000_0000;

fn rsi() -> Rsi<RmmModel> {
    Rsi::new(RmmModel::new(ModelConfig::default()))
}

fn rsi_with(config: ModelConfig) -> Rsi<RmmModel> {
    Rsi::new(RmmModel::new(config))
}

fn parse_hex(text: &str) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (index, pair) in text.as_bytes().chunks(2).enumerate() {
        let nibble = |c: u8| (c as char).to_digit(16).unwrap() as u8;
        out[index] = nibble(pair[0]) << 4 | nibble(pair[1]);
    }
    out
}

fn answer(values: &[u64]) -> [u64; RESULT_REGS] {
    let mut result = [0u64; RESULT_REGS];
    result[..values.len()].copy_from_slice(values);
    result
}

// ---- RSI_VERSION ----

#[test]
fn version_1_0_accepted() {
    let mut rsi = rsi();
    let negotiated = rsi.negotiate().unwrap();
    assert_eq!(negotiated.version, Version::V1_0);
    assert_eq!(negotiated.highest, Version::V1_0);
    let call = rsi.conduit().calls()[0];
    assert_eq!(call.function_id, 0xC400_0190);
    assert_eq!(call.args[0], 0x1_0000);
}

#[test]
fn version_1_0_accepted_by_a_newer_rmm_that_still_implements_it() {
    let mut rsi = rsi_with(ModelConfig {
        implemented: vec![Version::V1_0, Version::new(1, 1)],
        ..ModelConfig::default()
    });
    let negotiated = rsi.negotiate().unwrap();
    assert_eq!(negotiated.version, Version::V1_0);
    assert_eq!(negotiated.highest, Version::new(1, 1));
}

#[test]
fn newer_only_rmm_refuses_1_0() {
    let mut rsi = rsi_with(ModelConfig {
        implemented: vec![Version::new(2, 0)],
        ..ModelConfig::default()
    });
    assert_eq!(
        rsi.negotiate(),
        Err(Error::VersionMismatch {
            requested: Version::V1_0,
            lower: 0x2_0000,
            higher: 0x2_0000,
        })
    );
}

#[test]
fn older_only_rmm_refuses_1_0() {
    let mut rsi = rsi_with(ModelConfig {
        implemented: vec![Version::new(0, 9)],
        ..ModelConfig::default()
    });
    assert_eq!(
        rsi.negotiate(),
        Err(Error::VersionMismatch {
            requested: Version::V1_0,
            lower: 0x9,
            higher: 0x9,
        })
    );
}

#[test]
fn asking_for_1_1_from_a_1_0_rmm_reports_its_range() {
    let mut rsi = rsi();
    assert_eq!(
        rsi.version(Version::new(1, 1)),
        Err(Error::VersionMismatch {
            requested: Version::new(1, 1),
            lower: 0x1_0000,
            higher: 0x1_0000,
        })
    );
}

#[test]
fn not_supported_means_not_a_realm() {
    let mut rsi = Rsi::new(RmmModel::not_a_realm());
    assert_eq!(rsi.negotiate(), Err(Error::NotRealm));
    // Firmware that writes only W0.
    let mut rsi = self::rsi();
    rsi.conduit_mut().inject_result(answer(&[0xFFFF_FFFF]));
    assert_eq!(rsi.negotiate(), Err(Error::NotRealm));
}

#[test]
fn version_answers_outside_the_spec_are_faults() {
    let cases = [
        // SUCCESS, but not for the revision asked for.
        answer(&[0, 0x1_0001, 0x1_0001]),
        // SUCCESS with higher below lower.
        answer(&[0, 0x1_0000, 0x9]),
        // SUCCESS with reserved bits set.
        answer(&[0, 0x1_0000, 1 << 40]),
    ];
    for case in cases {
        let mut rsi = rsi();
        rsi.conduit_mut().inject_result(case);
        assert!(matches!(
            rsi.negotiate(),
            Err(Error::BadResponse {
                function: Function::Version,
                ..
            })
        ));
    }
    let mut rsi = rsi();
    rsi.conduit_mut().inject_result(answer(&[9]));
    assert_eq!(
        rsi.negotiate(),
        Err(Error::BadResponse {
            function: Function::Version,
            register: 0,
            value: 9
        })
    );
    let mut rsi = self::rsi();
    rsi.conduit_mut().inject_result(answer(&[2]));
    assert_eq!(
        rsi.negotiate(),
        Err(Error::Status {
            function: Function::Version,
            status: Status::ErrorState
        })
    );
}

// ---- RSI_FEATURES ----

#[test]
fn features_are_zero_in_1_0() {
    let mut rsi = rsi();
    assert_eq!(rsi.features(0), Ok(0));
    assert_eq!(rsi.features(7), Ok(0));
}

#[test]
fn other_commands_are_not_in_the_model() {
    let mut model = RmmModel::new(ModelConfig::default());
    assert_eq!(
        model.call(Function::HostCall.id(), [0; 10])[0],
        SMCCC_NOT_SUPPORTED
    );
    assert_eq!(model.call(0xC400_01A0, [0; 10])[0], SMCCC_NOT_SUPPORTED);
}

// ---- RSI_REALM_CONFIG ----

#[test]
fn realm_config_decodes_and_derives_the_shared_bit() {
    let mut rsi = rsi();
    rsi.conduit_mut()
        .set_initial_ripas(RAM, RAM + 4 * G, Ripas::Ram);
    let mut granule = Granule(core::array::from_fn(|index| index as u8));
    let config = rsi.realm_config(&mut granule, RAM + G).unwrap();
    assert_eq!(config.ipa_width(), 39);
    assert_eq!(config.hash_algorithm(), HashAlgorithm::Sha256);
    assert_eq!(config.shared_bit(), 0x40_0000_0000);
    assert_eq!(config.unprotected_alias(RAM), Some(0x40_4000_0000));
    // The client zeroed the granule: only the RMM's fields are set.
    assert!(granule.0[9..].iter().all(|&byte| byte == 0));
    assert_eq!(rsi.conduit().calls()[0].args[0], RAM + G);
}

#[test]
fn realm_config_sha512_and_wide_ipa() {
    let mut rsi = rsi_with(ModelConfig {
        ipa_width: 48,
        hash_algorithm: 1,
        ..ModelConfig::default()
    });
    rsi.conduit_mut()
        .set_initial_ripas(RAM, RAM + G, Ripas::Ram);
    let config = rsi.realm_config(&mut Granule::zeroed(), RAM).unwrap();
    assert_eq!(config.hash_algorithm(), HashAlgorithm::Sha512);
    assert_eq!(config.shared_bit(), 1 << 47);
}

#[test]
fn realm_config_refuses_invalid_configurations() {
    for (ipa_width, hash_algorithm, expected) in [
        (60, 0, ConfigError::IpaWidth(60)),
        (31, 0, ConfigError::IpaWidth(31)),
        (39, 7, ConfigError::HashAlgorithm(7)),
    ] {
        let mut rsi = rsi_with(ModelConfig {
            ipa_width,
            hash_algorithm,
            ram_base: 0x1000_0000,
            ..ModelConfig::default()
        });
        rsi.conduit_mut()
            .set_initial_ripas(0x1000_0000, 0x1000_1000, Ripas::Ram);
        assert_eq!(
            rsi.realm_config(&mut Granule::zeroed(), 0x1000_0000),
            Err(Error::BadConfig(expected))
        );
    }
}

#[test]
fn realm_config_bad_addresses() {
    let mut rsi = rsi();
    // Unaligned: refused before calling.
    assert_eq!(
        rsi.realm_config(&mut Granule::zeroed(), RAM + 8),
        Err(Error::InvalidArgument(Function::RealmConfig))
    );
    assert!(rsi.conduit().calls().is_empty());
    let input = Err(Error::Status {
        function: Function::RealmConfig,
        status: Status::ErrorInput,
    });
    // RIPAS EMPTY: the RMM will not write there.
    assert_eq!(rsi.realm_config(&mut Granule::zeroed(), RAM), input);
    // Unprotected IPA.
    assert_eq!(
        rsi.realm_config(&mut Granule::zeroed(), RAM | 1 << 38),
        input
    );
}

// ---- RSI_IPA_STATE_GET ----

#[test]
fn ipa_state_get_reports_runs() {
    let mut rsi = rsi();
    rsi.conduit_mut()
        .set_initial_ripas(RAM + 2 * G, RAM + 6 * G, Ripas::Ram);
    assert_eq!(
        rsi.ipa_state_get(RAM, RAM + 8 * G),
        Ok(IpaState {
            ripas: Ripas::Empty,
            top: RAM + 2 * G
        })
    );
    assert_eq!(
        rsi.ipa_state_get(RAM + 2 * G, RAM + 8 * G),
        Ok(IpaState {
            ripas: Ripas::Ram,
            top: RAM + 6 * G
        })
    );
    assert_eq!(
        rsi.ipa_state_get(RAM + 2 * G, RAM + 3 * G),
        Ok(IpaState {
            ripas: Ripas::Ram,
            top: RAM + 3 * G
        })
    );
    assert_eq!(
        rsi.ipa_state_get(RAM + 3, RAM + G),
        Err(Error::InvalidArgument(Function::IpaStateGet))
    );
    assert_eq!(
        rsi.ipa_state_get(RAM, 1 << 39),
        Err(Error::Status {
            function: Function::IpaStateGet,
            status: Status::ErrorInput
        })
    );
}

#[test]
fn ipa_state_get_hostile_answers() {
    let bad_top = answer(&[0, RAM + 9 * G, 1]);
    let dev = answer(&[0, RAM + G, 3]);
    let no_progress = answer(&[0, RAM, 1]);
    for (case, register) in [(bad_top, 1), (dev, 2), (no_progress, 1)] {
        let mut rsi = rsi();
        rsi.conduit_mut().inject_result(case);
        assert!(matches!(
            rsi.ipa_state_get(RAM, RAM + 8 * G),
            Err(Error::BadResponse { register: r, .. }) if r == register
        ));
    }
}

// ---- RSI_IPA_STATE_SET ----

#[test]
fn ipa_state_set_whole_ram_in_one_call() {
    let mut rsi = rsi();
    let top = RAM + (16 << 20);
    let report = rsi
        .ipa_state_set(RAM, top, Ripas::Ram, ChangeDestroyed::NoChangeDestroyed)
        .unwrap();
    assert_eq!(report.calls, 1);
    let model = rsi.conduit();
    assert_eq!(model.ripas(RAM), Ripas::Ram);
    assert_eq!(model.ripas(top - G), Ripas::Ram);
    assert_eq!(model.zeroed_granules().len(), 4096);
}

#[test]
fn ipa_state_set_partial_progress_loop() {
    let mut rsi = rsi();
    rsi.conduit_mut()
        .set_host_behaviour(HostBehaviour::OneGranulePerCall);
    let report = rsi
        .ipa_state_set(
            RAM,
            RAM + 8 * G,
            Ripas::Ram,
            ChangeDestroyed::NoChangeDestroyed,
        )
        .unwrap();
    assert_eq!(report.calls, 8);
    let model = rsi.conduit();
    // Each call went on from the base the previous one returned.
    let bases: alloc::vec::Vec<u64> = model.calls().iter().map(|call| call.args[0]).collect();
    assert_eq!(
        bases,
        (0..8).map(|n| RAM + n * G).collect::<alloc::vec::Vec<_>>()
    );
    assert!(model.calls().iter().all(|call| call.args[1] == RAM + 8 * G));
    assert_eq!(
        rsi.ipa_state_get(RAM, RAM + 16 * G),
        Ok(IpaState {
            ripas: Ripas::Ram,
            top: RAM + 8 * G
        })
    );
}

#[test]
fn ipa_state_set_zero_progress_is_an_error_not_a_spin() {
    let mut rsi = rsi();
    rsi.conduit_mut()
        .set_host_behaviour(HostBehaviour::ZeroProgress);
    assert_eq!(
        rsi.ipa_state_set(
            RAM,
            RAM + 8 * G,
            Ripas::Ram,
            ChangeDestroyed::NoChangeDestroyed
        ),
        Err(Error::ZeroProgress { at: RAM })
    );
    assert_eq!(rsi.conduit().count_calls(Function::IpaStateSet), 1);
    assert_eq!(rsi.conduit().ripas(RAM), Ripas::Empty);
}

#[test]
fn ipa_state_set_reject() {
    let mut rsi = rsi();
    rsi.conduit_mut().set_host_behaviour(HostBehaviour::REJECT);
    assert_eq!(
        rsi.ipa_state_set(
            RAM,
            RAM + 8 * G,
            Ripas::Ram,
            ChangeDestroyed::NoChangeDestroyed
        ),
        Err(Error::Rejected { at: RAM })
    );
    assert_eq!(rsi.conduit().count_calls(Function::IpaStateSet), 1);
    assert!(rsi.conduit().zeroed_granules().is_empty());
}

#[test]
fn ipa_state_set_reject_after_partial_progress() {
    let mut rsi = rsi();
    rsi.conduit_mut()
        .set_host_behaviour(HostBehaviour::RejectAfter { granules: 3 });
    assert_eq!(
        rsi.ipa_state_set(
            RAM,
            RAM + 8 * G,
            Ripas::Ram,
            ChangeDestroyed::NoChangeDestroyed
        ),
        Err(Error::Rejected { at: RAM + 3 * G })
    );
    let model = rsi.conduit();
    assert_eq!(model.ripas(RAM + 2 * G), Ripas::Ram);
    assert_eq!(model.ripas(RAM + 3 * G), Ripas::Empty);
}

#[test]
fn ipa_state_set_refused_empty_shows_as_zero_progress() {
    // TF-RMM reports REJECT only for changes to RAM.
    let mut rsi = rsi();
    rsi.conduit_mut()
        .set_initial_ripas(RAM, RAM + 8 * G, Ripas::Ram);
    rsi.conduit_mut()
        .set_host_behaviour(HostBehaviour::RejectAfter { granules: 3 });
    assert_eq!(
        rsi.ipa_state_set(
            RAM,
            RAM + 8 * G,
            Ripas::Empty,
            ChangeDestroyed::ChangeDestroyed
        ),
        Err(Error::ZeroProgress { at: RAM + 3 * G })
    );
    assert_eq!(rsi.conduit().count_calls(Function::IpaStateSet), 2);
}

#[test]
fn ipa_state_set_bad_inputs_are_refused_before_calling() {
    let mut rsi = rsi();
    let no = ChangeDestroyed::NoChangeDestroyed;
    let invalid = Err(Error::InvalidArgument(Function::IpaStateSet));
    assert_eq!(rsi.ipa_state_set(RAM + 1, RAM + G, Ripas::Ram, no), invalid);
    assert_eq!(rsi.ipa_state_set(RAM, RAM + G + 1, Ripas::Ram, no), invalid);
    assert_eq!(rsi.ipa_state_set(RAM, RAM, Ripas::Ram, no), invalid);
    assert_eq!(rsi.ipa_state_set(RAM + G, RAM, Ripas::Ram, no), invalid);
    assert_eq!(
        rsi.ipa_state_set(RAM, RAM + G, Ripas::Destroyed, no),
        invalid
    );
    assert!(rsi.conduit().calls().is_empty());
}

#[test]
fn ipa_state_set_outside_protected_space_is_refused_by_the_rmm() {
    let mut rsi = rsi();
    let top = 1 << 38;
    assert_eq!(
        rsi.ipa_state_set(
            top - G,
            top + G,
            Ripas::Empty,
            ChangeDestroyed::NoChangeDestroyed
        ),
        Err(Error::Status {
            function: Function::IpaStateSet,
            status: Status::ErrorInput
        })
    );
}

#[test]
fn model_refuses_bad_raw_inputs() {
    let mut model = RmmModel::new(ModelConfig::default());
    let id = Function::IpaStateSet.id();
    let call = |model: &mut RmmModel, base, top, ripas, flags| {
        model.call(id, [base, top, ripas, flags, 0, 0, 0, 0, 0, 0])[0]
    };
    let input = Status::ErrorInput as u64;
    assert_eq!(call(&mut model, RAM, RAM + G, 2, 0), input);
    assert_eq!(call(&mut model, RAM, RAM + G, 3, 0), input);
    assert_eq!(call(&mut model, RAM, RAM + G, 99, 0), input);
    assert_eq!(call(&mut model, RAM + 8, RAM + G, 1, 0), input);
    assert_eq!(call(&mut model, RAM, RAM + 8, 1, 0), input);
    assert_eq!(call(&mut model, RAM + G, RAM, 1, 0), input);
    assert_eq!(call(&mut model, RAM, !(G - 1), 1, 0), input);
    assert_eq!(call(&mut model, RAM, RAM + G, 1, 0), 0);
    // Nothing changed by the refused calls.
    assert_eq!(model.zeroed_granules(), &[RAM]);
}

#[test]
fn ipa_state_set_hostile_new_base() {
    let no = ChangeDestroyed::NoChangeDestroyed;
    let cases = [
        (answer(&[0, RAM + 9 * G, 0]), 1), // past top
        (answer(&[0, RAM - G, 0]), 1),     // below base
        (answer(&[0, RAM + G + 8, 0]), 1), // unaligned
        (answer(&[0, RAM + 8 * G, 5]), 2), // unknown response
    ];
    for (case, register) in cases {
        let mut rsi = rsi();
        rsi.conduit_mut().inject_result(case);
        assert!(matches!(
            rsi.ipa_state_set(RAM, RAM + 8 * G, Ripas::Ram, no),
            Err(Error::BadResponse { function: Function::IpaStateSet, register: r, .. })
                if r == register
        ));
    }
}

#[test]
fn ipa_state_set_destroyed_granules() {
    let mut rsi = rsi();
    rsi.conduit_mut()
        .set_initial_ripas(RAM, RAM + 8 * G, Ripas::Ram);
    rsi.conduit_mut().destroy(RAM + 4 * G, RAM + 5 * G);
    // Without CHANGE_DESTROYED the change stops at the DESTROYED granule; the loop then sees
    // no progress and stops too.
    assert_eq!(
        rsi.ipa_state_set(
            RAM,
            RAM + 8 * G,
            Ripas::Empty,
            ChangeDestroyed::NoChangeDestroyed
        ),
        Err(Error::ZeroProgress { at: RAM + 4 * G })
    );
    assert_eq!(rsi.conduit().ripas(RAM + 4 * G), Ripas::Destroyed);
    assert_eq!(rsi.conduit().ripas(RAM + 5 * G), Ripas::Ram);
    // With it, the whole range changes.
    rsi.ipa_state_set(
        RAM,
        RAM + 8 * G,
        Ripas::Empty,
        ChangeDestroyed::ChangeDestroyed,
    )
    .unwrap();
    assert_eq!(rsi.conduit().ripas(RAM + 4 * G), Ripas::Empty);
    assert_eq!(rsi.conduit().ripas(RAM + 7 * G), Ripas::Empty);
}

#[test]
fn only_real_ripas_changes_discard_contents() {
    let mut rsi = rsi();
    let no = ChangeDestroyed::NoChangeDestroyed;
    rsi.ipa_state_set(RAM, RAM + 4 * G, Ripas::Ram, no).unwrap();
    assert_eq!(rsi.conduit().zeroed_granules().len(), 4);
    rsi.conduit_mut().clear_zeroed();
    // RAM -> RAM is a no-op: contents stay.
    rsi.ipa_state_set(RAM, RAM + 4 * G, Ripas::Ram, no).unwrap();
    assert!(rsi.conduit().zeroed_granules().is_empty());
    // RAM -> EMPTY (making memory shared) discards.
    rsi.ipa_state_set(
        RAM + G,
        RAM + 3 * G,
        Ripas::Empty,
        ChangeDestroyed::ChangeDestroyed,
    )
    .unwrap();
    assert_eq!(rsi.conduit().zeroed_granules(), &[RAM + G, RAM + 2 * G]);
}

#[test]
fn stress_mode_share_and_unshare_round_trip() {
    let mut rsi = rsi();
    rsi.conduit_mut()
        .set_host_behaviour(HostBehaviour::OneGranulePerCall);
    let yes = ChangeDestroyed::ChangeDestroyed;
    rsi.ipa_state_set(RAM, RAM + 4 * G, Ripas::Ram, yes)
        .unwrap();
    let shared = rsi
        .ipa_state_set(RAM + G, RAM + 3 * G, Ripas::Empty, yes)
        .unwrap();
    assert_eq!(shared.calls, 2);
    assert_eq!(
        rsi.ipa_state_get(RAM + G, RAM + 4 * G).unwrap(),
        IpaState {
            ripas: Ripas::Empty,
            top: RAM + 3 * G
        }
    );
    rsi.ipa_state_set(RAM + G, RAM + 3 * G, Ripas::Ram, yes)
        .unwrap();
    assert_eq!(
        rsi.ipa_state_get(RAM, RAM + 4 * G).unwrap(),
        IpaState {
            ripas: Ripas::Ram,
            top: RAM + 4 * G
        }
    );
}

// ---- RSI_MEASUREMENT_READ / _EXTEND ----

#[test]
fn measurement_read_rim() {
    let mut rsi = rsi();
    let rim = rsi.measurement_read(MeasurementIndex::Rim).unwrap();
    assert_eq!(rim.0, rsi.conduit().config().rim);
    assert_eq!(
        rsi.measurement_read(MeasurementIndex::Rem3).unwrap(),
        Measurement([0; 64])
    );
}

#[test]
fn measurement_extend_known_sha256() {
    let mut rsi = rsi();
    rsi.measurement_extend(MeasurementIndex::Rem0, b"abc")
        .unwrap();
    let call = rsi.conduit().calls()[0];
    assert_eq!(call.function_id, 0xC400_0193);
    assert_eq!(&call.args[..3], &[1, 3, 0x63_6261]);
    // SHA-256(32 zero bytes || "abc").
    let expected = parse_hex("365aa7d8f7f9402c4b9434502b4cc89ddb09fe50d7cd95b493b834c62d5a5370");
    assert_eq!(
        rsi.measurement_read(MeasurementIndex::Rem0).unwrap(),
        Measurement(expected)
    );
    // Extending chains: SHA-256(previous || "moat").
    rsi.measurement_extend(MeasurementIndex::Rem0, b"moat")
        .unwrap();
    let expected = parse_hex("169fb7fcabb0d938a7a4f81f8277a86cb47fcb491dd297c061b5b4ac0e1d74c4");
    assert_eq!(
        rsi.measurement_read(MeasurementIndex::Rem0).unwrap(),
        Measurement(expected)
    );
    // Other REMs are untouched.
    assert_eq!(
        rsi.measurement_read(MeasurementIndex::Rem1).unwrap(),
        Measurement([0; 64])
    );
}

#[test]
fn measurement_extend_known_sha512() {
    let mut rsi = rsi_with(ModelConfig {
        hash_algorithm: 1,
        ..ModelConfig::default()
    });
    rsi.measurement_extend(MeasurementIndex::Rem2, b"abc")
        .unwrap();
    // SHA-512(64 zero bytes || "abc").
    let expected = parse_hex(
        "7682b6b84c6f692545a896ad210299bcc6f74e189d829e165739b11dd83b6f2c\
         8cfacf27e812bf064df756d6235ac33c062b89ecb80f8215516dbbb844ce8480",
    );
    assert_eq!(
        rsi.measurement_read(MeasurementIndex::Rem2).unwrap(),
        Measurement(expected)
    );
}

#[test]
fn measurement_extend_full_64_bytes_and_bad_inputs() {
    let mut rsi = rsi();
    let value: [u8; 64] = core::array::from_fn(|index| index as u8);
    rsi.measurement_extend(MeasurementIndex::Rem1, &value)
        .unwrap();
    let expected = crate::measurement::extend(HashAlgorithm::Sha256, &[0; 64], &value);
    assert_eq!(
        rsi.measurement_read(MeasurementIndex::Rem1).unwrap(),
        Measurement(expected)
    );
    let invalid = Err(Error::InvalidArgument(Function::MeasurementExtend));
    assert_eq!(rsi.measurement_extend(MeasurementIndex::Rim, b"x"), invalid);
    assert_eq!(
        rsi.measurement_extend(MeasurementIndex::Rem0, &[0; 65]),
        invalid
    );
    // The model refuses the same on raw calls.
    let mut model = rsi.into_conduit();
    let extend = Function::MeasurementExtend.id();
    assert_eq!(model.call(extend, [0, 1, 0, 0, 0, 0, 0, 0, 0, 0])[0], 1);
    assert_eq!(model.call(extend, [5, 1, 0, 0, 0, 0, 0, 0, 0, 0])[0], 1);
    assert_eq!(model.call(extend, [1, 65, 0, 0, 0, 0, 0, 0, 0, 0])[0], 1);
    let read = Function::MeasurementRead.id();
    assert_eq!(model.call(read, [5, 0, 0, 0, 0, 0, 0, 0, 0, 0])[0], 1);
}

#[test]
fn client_works_through_a_borrowed_conduit() {
    let mut model = RmmModel::new(ModelConfig::default());
    {
        let mut rsi = Rsi::new(&mut model);
        rsi.negotiate().unwrap();
    }
    assert_eq!(model.count_calls(Function::Version), 1);
}
