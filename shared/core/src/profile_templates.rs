//! Built-in profile templates: common policies an operator instantiates with a few
//! parameters instead of writing SyncML. Each template turns its parameters into the
//! [`Setting`]s of a device profile; every node path, format and allowed value comes from
//! Microsoft's CSP reference, cited next to the template. Parameters are checked against
//! the documented ranges before anything is built, and the result is checked by
//! [`validate_settings`] like any other profile.
//!
//! Settings are listed in the order they must be applied: the profile engine sends them
//! in one `Atomic`, in order, and some CSP nodes reset others when written (DeviceLock's,
//! see the password template).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::commands::{ItemSpec, Verb};
use crate::profiles::{ProfileError, ProfileScope, Setting, validate_settings};

/// A template, as `GET /admin/v1/profile-templates` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TemplateInfo {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub params: &'static [ParamInfo],
}

/// One parameter of a template. `kind` is `int` (a JSON integer from `min` to `max`),
/// `bool` (a JSON boolean) or `enum` (a JSON string, one of `choices`). Without a
/// `default`, an omitted parameter leaves its node unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamInfo {
    pub name: &'static str,
    pub kind: &'static str,
    pub default: Option<&'static str>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub choices: &'static [&'static str],
    pub help: &'static str,
}

/// Why a template could not be instantiated; the message names the parameter and what it
/// accepts, for an HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template {name:?}: the templates are {known}")]
    UnknownTemplate { name: String, known: String },
    #[error("{template}: parameters must be a JSON object of parameter names to values")]
    NotAnObject { template: &'static str },
    #[error("{template}: unknown parameter {param:?}: its parameters are {known}")]
    UnknownParam {
        template: &'static str,
        param: String,
        known: String,
    },
    #[error("{template}: {param} must be {expected}, not {got}")]
    WrongType {
        template: &'static str,
        param: &'static str,
        expected: String,
        got: String,
    },
    #[error("{template}: {param} must be from {min} to {max}, not {value}")]
    OutOfRange {
        template: &'static str,
        param: &'static str,
        min: i64,
        max: i64,
        value: i64,
    },
    #[error("{template}: {param} must be one of {choices}, not {value:?}")]
    NotAChoice {
        template: &'static str,
        param: &'static str,
        choices: String,
        value: String,
    },
    /// Parameters that are each valid but do not go together; the message names them.
    #[error("{template}: {message}")]
    Conflict {
        template: &'static str,
        message: String,
    },
    /// A template built settings the profile checks refuse (a bug in the template).
    #[error("{template}: the template built settings that are not valid: {source}")]
    Invalid {
        template: &'static str,
        #[source]
        source: ProfileError,
    },
}

/// The built-in templates.
pub fn templates() -> &'static [TemplateInfo] {
    TEMPLATES
}

/// The template called `name`.
pub fn template(name: &str) -> Option<&'static TemplateInfo> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// Builds the settings of template `name` from `params` (a JSON object; `null` or `{}`
/// for the defaults; a `null` value is the same as leaving the parameter out).
pub fn instantiate(
    name: &str,
    params: &Value,
) -> Result<(ProfileScope, Vec<Setting>), TemplateError> {
    let tpl = template(name).ok_or_else(|| TemplateError::UnknownTemplate {
        name: name.chars().take(64).collect(),
        known: TEMPLATES
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let args = Args::new(tpl, params)?;
    let settings = match tpl.name {
        "password" => password(&args)?,
        "bitlocker" => bitlocker(&args)?,
        "windows_update" => windows_update(&args)?,
        "defender" => defender(&args)?,
        "firewall" => firewall(&args)?,
        "camera_off" => camera_off(),
        other => unreachable!("template {other} has no builder"),
    };
    let scope = ProfileScope::Device;
    validate_settings(scope, &settings).map_err(|source| TemplateError::Invalid {
        template: tpl.name,
        source,
    })?;
    Ok((scope, settings))
}

static TEMPLATES: &[TemplateInfo] = &[
    TemplateInfo {
        name: "password",
        title: "Device password",
        description: "Requires a device password or PIN (Policy CSP DeviceLock): minimum length, \
                      complexity, lock after inactivity, and optionally expiry, history and a \
                      limit on failed attempts.",
        params: PASSWORD_PARAMS,
    },
    TemplateInfo {
        name: "bitlocker",
        title: "BitLocker device encryption",
        description: "Requires BitLocker encryption of the device's drives (BitLocker CSP), \
                      with the encryption method per drive type and optional startup \
                      authentication.",
        params: BITLOCKER_PARAMS,
    },
    TemplateInfo {
        name: "windows_update",
        title: "Windows Update ring",
        description: "Windows Update for Business ring (Policy CSP Update): deferrals and \
                      installation deadlines for quality and feature updates, and active \
                      hours without automatic restarts.",
        params: UPDATE_PARAMS,
    },
    TemplateInfo {
        name: "defender",
        title: "Microsoft Defender Antivirus",
        description: "Real-time monitoring and cloud-delivered protection (Policy CSP \
                      Defender). Changes are not applied while tamper protection is on.",
        params: DEFENDER_PARAMS,
    },
    TemplateInfo {
        name: "firewall",
        title: "Windows Defender Firewall",
        description: "Turns Windows Defender Firewall on for the domain, private and public \
                      network profiles (Firewall CSP).",
        params: FIREWALL_PARAMS,
    },
    TemplateInfo {
        name: "camera_off",
        title: "Disable cameras",
        description: "Disables the use of cameras on the device (Policy CSP Camera).",
        params: &[],
    },
];

const fn int(
    name: &'static str,
    default: Option<&'static str>,
    min: i64,
    max: i64,
    help: &'static str,
) -> ParamInfo {
    ParamInfo {
        name,
        kind: "int",
        default,
        min: Some(min),
        max: Some(max),
        choices: &[],
        help,
    }
}

const fn boolean(name: &'static str, default: &'static str, help: &'static str) -> ParamInfo {
    ParamInfo {
        name,
        kind: "bool",
        default: Some(default),
        min: None,
        max: None,
        choices: &[],
        help,
    }
}

const fn choice(
    name: &'static str,
    default: &'static str,
    choices: &'static [&'static str],
    help: &'static str,
) -> ParamInfo {
    ParamInfo {
        name,
        kind: "enum",
        default: Some(default),
        min: None,
        max: None,
        choices,
        help,
    }
}

// ---------------------------------------------------------------------------- password

/// Policy CSP - DeviceLock:
/// https://learn.microsoft.com/en-us/windows/client-management/mdm/policy-csp-devicelock
/// (MicrosoftDocs/windows-itpro-docs, windows/client-management/mdm/policy-csp-devicelock.md,
/// ms.date 08/05/2024). Every node: device scope, format `int`; the docs say each "must be
/// wrapped in an Atomic command" (the profile engine sends profiles in one Atomic) and to
/// "always use the Replace command instead of Add ... in Windows for desktop editions".
const DEVICELOCK: &str = "./Device/Vendor/MSFT/Policy/Config/DeviceLock/";

static PASSWORD_PARAMS: &[ParamInfo] = &[
    // MinDevicePasswordLength: Range [4-16]; local accounts always enforce at least 6.
    int(
        "min_length",
        Some("12"),
        4,
        16,
        "Minimum password or PIN length (local accounts always enforce at least 6).",
    ),
    // MinDevicePasswordComplexCharacters: 1 digits only, 2 digits and lowercase, 3 digits,
    // lowercase and uppercase, 4 adds special characters but is "Not supported in
    // desktop", so it is not offered. 0 is ours: AlphanumericDevicePasswordRequired = 2
    // (numeric PINs allowed) and no complexity node.
    int(
        "complexity",
        Some("2"),
        0,
        3,
        "0: numeric PINs allowed; 1-3: a password or alphanumeric PIN with 1 digits only, \
         2 digits and lowercase letters, 3 digits, lowercase and uppercase letters (local \
         accounts always enforce 3; Microsoft accounts support at most 2).",
    ),
    // MaxDevicePasswordFailedAttempts: Range [0-999], 0 disables. On desktops the device
    // is not wiped: it restarts into BitLocker recovery (and without BitLocker the policy
    // can't be enforced).
    int(
        "max_failed_attempts",
        None,
        0,
        999,
        "Failed sign-in attempts before the device restarts into BitLocker recovery \
         (desktops are not wiped; needs BitLocker); 0 disables. Unset: not configured.",
    ),
    // MaxInactivityTimeDeviceLock: Range [0-999] minutes, 0 = no timeout.
    int(
        "inactivity_minutes",
        Some("15"),
        0,
        999,
        "Minutes of inactivity before the device locks; 0: no timeout.",
    ),
    // DevicePasswordExpiration: Range [0-730] days, 0 = passwords don't expire.
    int(
        "expiration_days",
        None,
        0,
        730,
        "Days before the password expires; 0: never. Unset: not configured.",
    ),
    // DevicePasswordHistory: Range [0-50], includes the current password.
    int(
        "history",
        None,
        0,
        50,
        "Previous passwords that can't be reused (including the current one). Unset: not \
         configured.",
    ),
];

/// Order matters, per the DeviceLock page:
/// - GOTCHA: DevicePasswordEnabled is inverted: **0 means the password is enabled** (1,
///   the default, disables it). Setting it to 0 resets MinDevicePasswordLength to 4 and
///   MinDevicePasswordComplexCharacters to 1, and every other node here only takes effect
///   when it is 0 (their DependsOn is DevicePasswordEnabled = 0), so it goes first.
/// - Setting AlphanumericDevicePasswordRequired resets MinDevicePasswordLength (to 0 for 1
///   or 2, to 4 for 0) and MinDevicePasswordComplexCharacters (to 1 or 2), so it goes
///   before both. MinDevicePasswordComplexCharacters depends on it being 0.
fn password(a: &Args<'_>) -> Result<Vec<Setting>, TemplateError> {
    let min_length = a.int_required("min_length")?;
    let complexity = a.int_required("complexity")?;
    let max_failed = a.int("max_failed_attempts")?;
    let inactivity = a.int_required("inactivity_minutes")?;
    let expiration = a.int("expiration_days")?;
    let history = a.int("history")?;

    let node = |n: &str| format!("{DEVICELOCK}{n}");
    let mut s = vec![int_setting(node("DevicePasswordEnabled"), 0)];
    if complexity > 0 {
        // 0: "Password or Alphanumeric PIN required."
        s.push(int_setting(node("AlphanumericDevicePasswordRequired"), 0));
        s.push(int_setting(node("MinDevicePasswordLength"), min_length));
        s.push(int_setting(
            node("MinDevicePasswordComplexCharacters"),
            complexity,
        ));
    } else {
        // 2: "Password, Numeric PIN, or Alphanumeric PIN required."
        s.push(int_setting(node("AlphanumericDevicePasswordRequired"), 2));
        s.push(int_setting(node("MinDevicePasswordLength"), min_length));
    }
    if let Some(v) = max_failed {
        s.push(int_setting(node("MaxDevicePasswordFailedAttempts"), v));
    }
    s.push(int_setting(node("MaxInactivityTimeDeviceLock"), inactivity));
    if let Some(v) = expiration {
        s.push(int_setting(node("DevicePasswordExpiration"), v));
    }
    if let Some(v) = history {
        s.push(int_setting(node("DevicePasswordHistory"), v));
    }
    Ok(s)
}

// ---------------------------------------------------------------------------- bitlocker

/// BitLocker CSP:
/// https://learn.microsoft.com/en-us/windows/client-management/mdm/bitlocker-csp
/// (MicrosoftDocs/windows-itpro-docs, windows/client-management/mdm/bitlocker-csp.md,
/// ms.date 08/06/2024). Device scope only. The page says "You must send all the settings
/// together in a single SyncML to be effective" and "Settings are enforced only at the
/// time encryption is started": changing the method later doesn't re-encrypt.
const BITLOCKER: &str = "./Device/Vendor/MSFT/BitLocker/";

/// EncryptionMethodByDriveType's drop-down values: 3 AES-CBC 128, 4 AES-CBC 256, 6 XTS-AES
/// 128, 7 XTS-AES 256.
const METHODS: &[&str] = &["aes_cbc_128", "aes_cbc_256", "xts_aes_128", "xts_aes_256"];

fn method_value(m: &str) -> i64 {
    match m {
        "aes_cbc_128" => 3,
        "aes_cbc_256" => 4,
        "xts_aes_128" => 6,
        "xts_aes_256" => 7,
        other => unreachable!("encryption method {other}"),
    }
}

const STARTUP: &[&str] = &[
    "not_configured",
    "tpm",
    "tpm_pin",
    "tpm_startup_key",
    "tpm_pin_startup_key",
];

static BITLOCKER_PARAMS: &[ParamInfo] = &[
    choice(
        "os_encryption_method",
        "xts_aes_256",
        METHODS,
        "Encryption method for the operating system drive.",
    ),
    choice(
        "fixed_encryption_method",
        "xts_aes_256",
        METHODS,
        "Encryption method for fixed data drives.",
    ),
    choice(
        "removable_encryption_method",
        "aes_cbc_256",
        METHODS,
        "Encryption method for removable data drives (AES-CBC keeps drives that move \
         between PCs readable by older Windows).",
    ),
    choice(
        "startup_authentication",
        "not_configured",
        STARTUP,
        "Additional authentication required at startup (SystemDrivesRequireStartupAuthentication): \
         the one required, the others disallowed. A startup PIN can't be set through MDM on \
         Modern Standby/HSTI devices: users set it themselves.",
    ),
    boolean(
        "allow_without_tpm",
        "false",
        "Allow BitLocker on devices without a compatible TPM (a password or USB startup key \
         is then required); needs startup_authentication.",
    ),
    boolean(
        "silent",
        "false",
        "Encrypt without prompting (AllowWarningForOtherDiskEncryption = 0, also for standard \
         users); Microsoft Entra joined devices only.",
    ),
];

/// An ADMX-backed node's data: `<enabled/>` and a `<data id=… value=…/>` per element.
fn admx_enabled(elements: &[(&str, String)]) -> String {
    let mut s = String::from("<enabled/>");
    for (id, value) in elements {
        s.push_str(&format!("<data id=\"{id}\" value=\"{value}\"/>"));
    }
    s
}

/// Order: the drive settings before RequireDeviceEncryption (which starts encryption),
/// AllowWarningForOtherDiskEncryption before AllowStandardUserEncryption (which depends on
/// it being 0).
fn bitlocker(a: &Args<'_>) -> Result<Vec<Setting>, TemplateError> {
    let os = a.choice_required("os_encryption_method")?;
    let fixed = a.choice_required("fixed_encryption_method")?;
    let removable = a.choice_required("removable_encryption_method")?;
    let startup = a.choice_required("startup_authentication")?;
    let without_tpm = a.bool_required("allow_without_tpm")?;
    let silent = a.bool_required("silent")?;
    if startup == "not_configured" && without_tpm {
        return Err(a.conflict(
            "allow_without_tpm needs startup_authentication (it is an option of \
             SystemDrivesRequireStartupAuthentication)",
        ));
    }
    // AllowWarningForOtherDiskEncryption = 0 makes Windows "attempt to silently enable
    // BitLocker"; a required PIN or startup key has to come from the user, so that can't
    // be silent (our inference from the CSP page, which also says Modern Standby and HSTI
    // devices can't get a startup PIN through the CSP at all).
    if silent
        && matches!(
            startup,
            "tpm_pin" | "tpm_startup_key" | "tpm_pin_startup_key"
        )
    {
        return Err(a.conflict(format!(
            "silent encryption can't require a startup PIN or key \
             (startup_authentication {startup}): use tpm or not_configured, or set silent \
             to false"
        )));
    }

    let node = |n: &str| format!("{BITLOCKER}{n}");
    // EncryptionMethodByDriveType: format chr, ADMX-backed; "you must specify values for
    // all three drives (operating system, fixed data, and removable data), otherwise it
    // will fail (500 return status)". Data ids from the page.
    let mut s = vec![chr_setting(
        node("EncryptionMethodByDriveType"),
        admx_enabled(&[
            (
                "EncryptionMethodWithXtsOsDropDown_Name",
                method_value(os).to_string(),
            ),
            (
                "EncryptionMethodWithXtsFdvDropDown_Name",
                method_value(fixed).to_string(),
            ),
            (
                "EncryptionMethodWithXtsRdvDropDown_Name",
                method_value(removable).to_string(),
            ),
        ]),
    )];
    if startup != "not_configured" {
        // SystemDrivesRequireStartupAuthentication: format chr, ADMX-backed. The drop-downs
        // take 2 Optional, 1 Required, 0 Disallowed; "Only one of the additional
        // authentication options can be required at startup, otherwise a policy error
        // occurs."
        let level = |option: &str| (if option == startup { "1" } else { "0" }).to_string();
        s.push(chr_setting(
            node("SystemDrivesRequireStartupAuthentication"),
            admx_enabled(&[
                (
                    "ConfigureNonTPMStartupKeyUsage_Name",
                    without_tpm.to_string(),
                ),
                (
                    "ConfigureTPMStartupKeyUsageDropDown_Name",
                    level("tpm_startup_key"),
                ),
                ("ConfigurePINUsageDropDown_Name", level("tpm_pin")),
                (
                    "ConfigureTPMPINKeyUsageDropDown_Name",
                    level("tpm_pin_startup_key"),
                ),
                ("ConfigureTPMUsageDropDown_Name", level("tpm")),
            ]),
        ));
    }
    if silent {
        // AllowWarningForOtherDiskEncryption: int, 0 disables the prompt ("can only be set
        // for Microsoft Entra joined devices"); AllowStandardUserEncryption: int, 1
        // encrypts even when a standard user is signed in, DependsOn the former being 0.
        s.push(int_setting(node("AllowWarningForOtherDiskEncryption"), 0));
        s.push(int_setting(node("AllowStandardUserEncryption"), 1));
    }
    // RequireDeviceEncryption: int, 1 "triggers encryption of all drives". GOTCHA: a Get
    // of this node returns the device's enforcement status, not the value set.
    s.push(int_setting(node("RequireDeviceEncryption"), 1));
    Ok(s)
}

// ---------------------------------------------------------------------- windows_update

/// Policy CSP - Update:
/// https://learn.microsoft.com/en-us/windows/client-management/mdm/policy-csp-update
/// (MicrosoftDocs/windows-itpro-docs, windows/client-management/mdm/policy-csp-update.md).
/// Every node: device scope, format `int`, the ranges below from its description framework
/// properties. With a deadline configured, "the download, installation, and reboot settings
/// from Update/AllowAutoUpdate are ignored".
const UPDATE: &str = "./Device/Vendor/MSFT/Policy/Config/Update/";

/// The active-hours range Windows allows when ActiveHoursMaxRange isn't set ("the default
/// max active hours range is 18 hours from the active hours start time").
const DEFAULT_ACTIVE_HOURS_MAX_RANGE: i64 = 18;

static UPDATE_PARAMS: &[ParamInfo] = &[
    // DeferQualityUpdatesPeriodInDays: Range [0-30].
    int(
        "quality_deferral_days",
        Some("0"),
        0,
        30,
        "Days to defer quality (monthly) updates after release.",
    ),
    // DeferFeatureUpdatesPeriodInDays: Range [0-365].
    int(
        "feature_deferral_days",
        Some("0"),
        0,
        365,
        "Days to defer feature updates after release.",
    ),
    // ConfigureDeadlineForQualityUpdates: Range [0-30] (Windows' default 7).
    int(
        "quality_deadline_days",
        Some("7"),
        0,
        30,
        "Days before a quality update is installed and the device restarted regardless of \
         active hours; 0: install immediately.",
    ),
    // ConfigureDeadlineForFeatureUpdates: Range [0-30] (Windows' default 2).
    int(
        "feature_deadline_days",
        Some("7"),
        0,
        30,
        "Days before a feature update is installed and the device restarted regardless of \
         active hours; 0: install immediately.",
    ),
    // ConfigureDeadlineGracePeriod: Range [0-7] (Windows' default 2).
    int(
        "grace_period_days",
        Some("2"),
        0,
        7,
        "Minimum days from installing a quality update until an automatic restart.",
    ),
    // ConfigureDeadlineGracePeriodForFeatureUpdates: Range [0-7]; unset, the quality grace
    // period applies.
    int(
        "feature_grace_period_days",
        None,
        0,
        7,
        "Minimum days from installing a feature update until an automatic restart. Unset: \
         grace_period_days applies.",
    ),
    // ActiveHoursStart: Range [0-23] (default 8).
    int(
        "active_hours_start",
        Some("8"),
        0,
        23,
        "Hour (0-23) active hours start: no automatic restarts after updates during them.",
    ),
    // ActiveHoursEnd: Range [0-23] (default 17).
    int(
        "active_hours_end",
        Some("17"),
        0,
        23,
        "Hour (0-23) active hours end.",
    ),
    // ActiveHoursMaxRange: Range [8-18].
    int(
        "active_hours_max_range",
        None,
        8,
        18,
        "Longest active hours (in hours) users may set. Unset: Windows' default of 18.",
    ),
];

fn windows_update(a: &Args<'_>) -> Result<Vec<Setting>, TemplateError> {
    let quality_deferral = a.int_required("quality_deferral_days")?;
    let feature_deferral = a.int_required("feature_deferral_days")?;
    let quality_deadline = a.int_required("quality_deadline_days")?;
    let feature_deadline = a.int_required("feature_deadline_days")?;
    let grace = a.int_required("grace_period_days")?;
    let feature_grace = a.int("feature_grace_period_days")?;
    let start = a.int_required("active_hours_start")?;
    let end = a.int_required("active_hours_end")?;
    let max_range = a.int("active_hours_max_range")?;

    // Active hours wrap past midnight (start 22, end 6 is 8 hours); their length may not
    // exceed the max range.
    let length = (end - start).rem_euclid(24);
    let limit = max_range.unwrap_or(DEFAULT_ACTIVE_HOURS_MAX_RANGE);
    if length == 0 {
        return Err(a.conflict(format!(
            "active_hours_end ({end}) must differ from active_hours_start ({start})"
        )));
    }
    if length > limit {
        return Err(a.conflict(format!(
            "active hours from {start} to {end} span {length} hours, more than the {limit} \
             allowed (active_hours_max_range, 8 to 18; Windows' default 18)"
        )));
    }

    let node = |n: &str| format!("{UPDATE}{n}");
    let mut s = vec![
        int_setting(node("DeferQualityUpdatesPeriodInDays"), quality_deferral),
        int_setting(node("DeferFeatureUpdatesPeriodInDays"), feature_deferral),
        int_setting(node("ConfigureDeadlineForQualityUpdates"), quality_deadline),
        int_setting(node("ConfigureDeadlineForFeatureUpdates"), feature_deadline),
        int_setting(node("ConfigureDeadlineGracePeriod"), grace),
    ];
    if let Some(v) = feature_grace {
        s.push(int_setting(
            node("ConfigureDeadlineGracePeriodForFeatureUpdates"),
            v,
        ));
    }
    // The max range first, so the device never sees start/end wider than its limit.
    if let Some(v) = max_range {
        s.push(int_setting(node("ActiveHoursMaxRange"), v));
    }
    s.push(int_setting(node("ActiveHoursStart"), start));
    s.push(int_setting(node("ActiveHoursEnd"), end));
    Ok(s)
}

// ---------------------------------------------------------------------------- defender

/// Policy CSP - Defender:
/// https://learn.microsoft.com/en-us/windows/client-management/mdm/policy-csp-defender
/// (MicrosoftDocs/windows-itpro-docs, windows/client-management/mdm/policy-csp-defender.md).
/// Device scope, format `int`. GOTCHA: for AllowRealtimeMonitoring and AllowCloudProtection
/// "Changes to this setting are not applied when tamper protection is enabled", while the
/// Policy CSP still reads back the value we set.
const DEFENDER: &str = "./Device/Vendor/MSFT/Policy/Config/Defender/";

static DEFENDER_PARAMS: &[ParamInfo] = &[
    // AllowRealtimeMonitoring: 0 not allowed, 1 allowed (default).
    boolean(
        "realtime_monitoring",
        "true",
        "Real-time monitoring (AllowRealtimeMonitoring).",
    ),
    // AllowCloudProtection: 0 not allowed, 1 allowed (default) - "Join Microsoft MAPS".
    boolean(
        "cloud_protection",
        "true",
        "Cloud-delivered protection, i.e. joining Microsoft MAPS (AllowCloudProtection).",
    ),
    // CloudBlockLevel: allowed values 0 NotConfigured, 2 High, 4 HighPlus, 6 ZeroTolerance;
    // "requires the 'Join Microsoft MAPS' setting enabled in order to function".
    choice(
        "cloud_block_level",
        "high",
        &["not_configured", "high", "high_plus", "zero_tolerance"],
        "How aggressively cloud protection blocks unknown files (CloudBlockLevel); needs \
         cloud_protection. zero_tolerance blocks all unknown executables.",
    ),
    // SubmitSamplesConsent: 0 always prompt, 1 send safe samples (default), 2 never send,
    // 3 send all samples; applies "when opt-in for MAPS telemetry is set".
    choice(
        "submit_samples",
        "send_safe",
        &["always_prompt", "send_safe", "never", "send_all"],
        "Sending file samples for analysis (SubmitSamplesConsent); needs cloud_protection.",
    ),
];

fn defender(a: &Args<'_>) -> Result<Vec<Setting>, TemplateError> {
    let realtime = a.bool_required("realtime_monitoring")?;
    let cloud = a.bool_required("cloud_protection")?;
    let block = a.choice_required("cloud_block_level")?;
    let samples = a.choice_required("submit_samples")?;
    let node = |n: &str| format!("{DEFENDER}{n}");
    let mut s = vec![
        int_setting(node("AllowRealtimeMonitoring"), i64::from(realtime)),
        int_setting(node("AllowCloudProtection"), i64::from(cloud)),
    ];
    if cloud {
        let level = match block {
            "not_configured" => 0,
            "high" => 2,
            "high_plus" => 4,
            "zero_tolerance" => 6,
            other => unreachable!("cloud block level {other}"),
        };
        let consent = match samples {
            "always_prompt" => 0,
            "send_safe" => 1,
            "never" => 2,
            "send_all" => 3,
            other => unreachable!("sample consent {other}"),
        };
        s.push(int_setting(node("CloudBlockLevel"), level));
        s.push(int_setting(node("SubmitSamplesConsent"), consent));
    } else {
        // Both only work with cloud protection: left out, unless asked for explicitly.
        if a.given("cloud_block_level") && block != "not_configured" {
            return Err(a.conflict(format!(
                "cloud_block_level {block} needs cloud_protection: set cloud_protection to \
                 true or leave cloud_block_level out"
            )));
        }
        if a.given("submit_samples") {
            return Err(a.conflict(
                "submit_samples needs cloud_protection: set cloud_protection to true or \
                 leave submit_samples out",
            ));
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------------------- firewall

/// Firewall CSP:
/// https://learn.microsoft.com/en-us/windows/client-management/mdm/firewall-csp
/// (MicrosoftDocs/windows-itpro-docs, windows/client-management/mdm/firewall-csp.md,
/// ms.date 08/06/2024). The CSP is rooted at `./Vendor/MSFT/Firewall` (the page gives no
/// `./Device/` form, so none is used; it is a device-scope CSP). MdmStore/{Domain,Private,
/// Public}Profile/EnableFirewall: format `bool`, default true. GOTCHA: its Access Type is
/// Replace only - no Add and no Get.
const FIREWALL: &str = "./Vendor/MSFT/Firewall/MdmStore/";

static FIREWALL_PARAMS: &[ParamInfo] = &[
    boolean(
        "domain",
        "true",
        "Firewall on for the domain network profile.",
    ),
    boolean(
        "private",
        "true",
        "Firewall on for the private network profile.",
    ),
    boolean(
        "public",
        "true",
        "Firewall on for the public network profile.",
    ),
];

fn firewall(a: &Args<'_>) -> Result<Vec<Setting>, TemplateError> {
    let mut s = Vec::new();
    for (param, profile) in [
        ("domain", "DomainProfile"),
        ("private", "PrivateProfile"),
        ("public", "PublicProfile"),
    ] {
        let on = a.bool_required(param)?;
        s.push(bool_setting(
            format!("{FIREWALL}{profile}/EnableFirewall"),
            on,
        ));
    }
    Ok(s)
}

// -------------------------------------------------------------------------- camera_off

/// Policy CSP - Camera:
/// https://learn.microsoft.com/en-us/windows/client-management/mdm/policy-csp-camera
/// (MicrosoftDocs/windows-itpro-docs, windows/client-management/mdm/policy-csp-camera.md).
/// AllowCamera: device scope, format `int`, 0 not allowed, 1 allowed (default).
fn camera_off() -> Vec<Setting> {
    vec![int_setting(
        "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera".into(),
        0,
    )]
}

// ---------------------------------------------------------------------------- settings

fn replace(target: String, format: &str, data: String) -> Setting {
    Setting {
        verb: Verb::Replace,
        item: ItemSpec {
            target,
            format: Some(format.into()),
            type_: None,
            data: Some(data),
        },
    }
}

fn int_setting(target: String, value: i64) -> Setting {
    replace(target, "int", value.to_string())
}

fn bool_setting(target: String, value: bool) -> Setting {
    replace(target, "bool", value.to_string())
}

fn chr_setting(target: String, value: String) -> Setting {
    replace(target, "chr", value)
}

// -------------------------------------------------------------------------- parameters

/// A template's parameters as given, read through its [`ParamInfo`]s.
struct Args<'a> {
    tpl: &'static TemplateInfo,
    given: Option<&'a Map<String, Value>>,
}

impl<'a> Args<'a> {
    fn new(tpl: &'static TemplateInfo, params: &'a Value) -> Result<Self, TemplateError> {
        let given = match params {
            Value::Null => None,
            Value::Object(m) => Some(m),
            _ => return Err(TemplateError::NotAnObject { template: tpl.name }),
        };
        for key in given.into_iter().flat_map(|m| m.keys()) {
            if !tpl.params.iter().any(|p| p.name == key) {
                let known = if tpl.params.is_empty() {
                    "(none)".to_owned()
                } else {
                    tpl.params
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(TemplateError::UnknownParam {
                    template: tpl.name,
                    param: key.chars().take(64).collect(),
                    known,
                });
            }
        }
        Ok(Self { tpl, given })
    }

    fn info(&self, name: &str, kind: &str) -> &'static ParamInfo {
        let p = self
            .tpl
            .params
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("template {} declares no {name}", self.tpl.name));
        assert_eq!(p.kind, kind, "{}.{name}", self.tpl.name);
        p
    }

    /// The value given for `name` (a JSON null counts as not given).
    fn raw(&self, name: &str) -> Option<&'a Value> {
        self.given?.get(name).filter(|v| !v.is_null())
    }

    fn given(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    fn wrong_type(&self, p: &'static ParamInfo, got: &Value) -> TemplateError {
        let expected = match p.kind {
            "int" => format!(
                "an integer from {} to {}",
                p.min.unwrap_or(i64::MIN),
                p.max.unwrap_or(i64::MAX)
            ),
            "bool" => "true or false".to_owned(),
            _ => format!("one of {}", p.choices.join(", ")),
        };
        TemplateError::WrongType {
            template: self.tpl.name,
            param: p.name,
            expected,
            got: describe(got),
        }
    }

    /// An `int` parameter: given, else its default, else `None`.
    fn int(&self, name: &str) -> Result<Option<i64>, TemplateError> {
        let p = self.info(name, "int");
        let value = match self.raw(name) {
            Some(v) => v.as_i64().ok_or_else(|| self.wrong_type(p, v))?,
            None => match p.default {
                Some(d) => d.parse().expect("integer default"),
                None => return Ok(None),
            },
        };
        let (min, max) = (p.min.unwrap_or(i64::MIN), p.max.unwrap_or(i64::MAX));
        if !(min..=max).contains(&value) {
            return Err(TemplateError::OutOfRange {
                template: self.tpl.name,
                param: p.name,
                min,
                max,
                value,
            });
        }
        Ok(Some(value))
    }

    fn int_required(&self, name: &str) -> Result<i64, TemplateError> {
        Ok(self.int(name)?.expect("parameter with a default"))
    }

    fn bool_required(&self, name: &str) -> Result<bool, TemplateError> {
        let p = self.info(name, "bool");
        match self.raw(name) {
            Some(v) => v.as_bool().ok_or_else(|| self.wrong_type(p, v)),
            None => Ok(p.default.expect("parameter with a default") == "true"),
        }
    }

    fn choice_required(&self, name: &str) -> Result<&'static str, TemplateError> {
        let p = self.info(name, "enum");
        let value = match self.raw(name) {
            Some(v) => v.as_str().ok_or_else(|| self.wrong_type(p, v))?,
            None => p.default.expect("parameter with a default"),
        };
        p.choices
            .iter()
            .copied()
            .find(|c| *c == value)
            .ok_or_else(|| TemplateError::NotAChoice {
                template: self.tpl.name,
                param: p.name,
                choices: p.choices.join(", "),
                value: value.chars().take(64).collect(),
            })
    }

    fn conflict(&self, message: impl Into<String>) -> TemplateError {
        TemplateError::Conflict {
            template: self.tpl.name,
            message: message.into(),
        }
    }
}

/// A short rendering of a JSON value for an error message.
fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(name: &str, params: Value) -> Vec<Setting> {
        let (scope, settings) = instantiate(name, &params).unwrap();
        assert_eq!(scope, ProfileScope::Device);
        validate_settings(scope, &settings).unwrap();
        settings
    }

    /// (target, format, data) of each setting, all Replace.
    fn triples(s: &[Setting]) -> Vec<(String, String, String)> {
        s.iter()
            .map(|s| {
                assert_eq!(s.verb, Verb::Replace);
                assert_eq!(s.item.type_, None);
                (
                    s.item.target.clone(),
                    s.item.format.clone().unwrap(),
                    s.item.data.clone().unwrap(),
                )
            })
            .collect()
    }

    fn err(name: &str, params: Value) -> TemplateError {
        instantiate(name, &params).unwrap_err()
    }

    #[test]
    fn every_template_builds_with_its_defaults() {
        let names: Vec<_> = templates().iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "password",
                "bitlocker",
                "windows_update",
                "defender",
                "firewall",
                "camera_off"
            ]
        );
        for t in templates() {
            let a = build(t.name, Value::Null);
            let b = build(t.name, json!({}));
            assert_eq!(a, b, "{}", t.name);
            assert!(!a.is_empty());
            // Every parameter given as null is the same as left out.
            let nulls: Map<String, Value> = t
                .params
                .iter()
                .map(|p| (p.name.to_owned(), Value::Null))
                .collect();
            assert_eq!(build(t.name, Value::Object(nulls)), a, "{}", t.name);
            for s in &a {
                let target = &s.item.target;
                assert!(
                    target.starts_with("./Device/Vendor/MSFT/")
                        || target.starts_with("./Vendor/MSFT/Firewall/"),
                    "{target}"
                );
            }
        }
    }

    #[test]
    fn parameter_declarations_are_consistent() {
        for t in templates() {
            for (i, p) in t.params.iter().enumerate() {
                assert!(
                    t.params[..i].iter().all(|o| o.name != p.name),
                    "{}.{} twice",
                    t.name,
                    p.name
                );
                assert!(!p.help.is_empty());
                match p.kind {
                    "int" => {
                        let (min, max) = (p.min.unwrap(), p.max.unwrap());
                        assert!(min <= max);
                        assert!(p.choices.is_empty());
                        if let Some(d) = p.default {
                            let d: i64 = d.parse().unwrap();
                            assert!((min..=max).contains(&d), "{}.{}", t.name, p.name);
                        }
                    }
                    "bool" => {
                        assert!(matches!(p.default, Some("true" | "false")));
                        assert!(p.min.is_none() && p.max.is_none() && p.choices.is_empty());
                    }
                    "enum" => {
                        assert!(p.choices.contains(&p.default.unwrap()), "{}", p.name);
                        assert!(p.min.is_none() && p.max.is_none());
                    }
                    other => panic!("{}.{}: kind {other}", t.name, p.name),
                }
            }
        }
    }

    #[test]
    fn templates_serialize_for_the_admin_api() {
        let v = serde_json::to_value(templates()).unwrap();
        let password = &v[0];
        assert_eq!(password["name"], "password");
        assert_eq!(password["params"][0]["name"], "min_length");
        assert_eq!(password["params"][0]["kind"], "int");
        assert_eq!(password["params"][0]["default"], "12");
        assert_eq!(password["params"][0]["min"], 4);
        assert_eq!(password["params"][0]["max"], 16);
        let bitlocker = &v[1];
        assert_eq!(
            bitlocker["params"][0]["choices"],
            json!(["aes_cbc_128", "aes_cbc_256", "xts_aes_128", "xts_aes_256"])
        );
        assert_eq!(v[5]["params"], json!([]));
    }

    #[test]
    fn password_nodes_and_order() {
        let dl = |n: &str| format!("./Device/Vendor/MSFT/Policy/Config/DeviceLock/{n}");
        let t = |n: &str, v: &str| (dl(n), "int".to_owned(), v.to_owned());
        assert_eq!(
            triples(&build("password", Value::Null)),
            [
                t("DevicePasswordEnabled", "0"),
                t("AlphanumericDevicePasswordRequired", "0"),
                t("MinDevicePasswordLength", "12"),
                t("MinDevicePasswordComplexCharacters", "2"),
                t("MaxInactivityTimeDeviceLock", "15"),
            ]
        );
        let custom = build(
            "password",
            json!({
                "min_length": 14,
                "complexity": 3,
                "max_failed_attempts": 10,
                "inactivity_minutes": 5,
                "expiration_days": 90,
                "history": 24
            }),
        );
        assert_eq!(
            triples(&custom),
            [
                t("DevicePasswordEnabled", "0"),
                t("AlphanumericDevicePasswordRequired", "0"),
                t("MinDevicePasswordLength", "14"),
                t("MinDevicePasswordComplexCharacters", "3"),
                t("MaxDevicePasswordFailedAttempts", "10"),
                t("MaxInactivityTimeDeviceLock", "5"),
                t("DevicePasswordExpiration", "90"),
                t("DevicePasswordHistory", "24"),
            ]
        );
        // Numeric PINs allowed: no complexity node.
        assert_eq!(
            triples(&build(
                "password",
                json!({"complexity": 0, "min_length": 6})
            )),
            [
                t("DevicePasswordEnabled", "0"),
                t("AlphanumericDevicePasswordRequired", "2"),
                t("MinDevicePasswordLength", "6"),
                t("MaxInactivityTimeDeviceLock", "15"),
            ]
        );
    }

    #[test]
    fn bitlocker_nodes_and_data() {
        let bl = |n: &str| format!("./Device/Vendor/MSFT/BitLocker/{n}");
        assert_eq!(
            triples(&build("bitlocker", Value::Null)),
            [
                (
                    bl("EncryptionMethodByDriveType"),
                    "chr".to_owned(),
                    "<enabled/>\
                     <data id=\"EncryptionMethodWithXtsOsDropDown_Name\" value=\"7\"/>\
                     <data id=\"EncryptionMethodWithXtsFdvDropDown_Name\" value=\"7\"/>\
                     <data id=\"EncryptionMethodWithXtsRdvDropDown_Name\" value=\"4\"/>"
                        .to_owned()
                ),
                (
                    bl("RequireDeviceEncryption"),
                    "int".to_owned(),
                    "1".to_owned()
                ),
            ]
        );
        let custom = build(
            "bitlocker",
            json!({
                "os_encryption_method": "xts_aes_128",
                "fixed_encryption_method": "aes_cbc_128",
                "removable_encryption_method": "xts_aes_256",
                "startup_authentication": "tpm",
                "allow_without_tpm": true,
                "silent": true
            }),
        );
        assert_eq!(
            triples(&custom),
            [
                (
                    bl("EncryptionMethodByDriveType"),
                    "chr".to_owned(),
                    "<enabled/>\
                     <data id=\"EncryptionMethodWithXtsOsDropDown_Name\" value=\"6\"/>\
                     <data id=\"EncryptionMethodWithXtsFdvDropDown_Name\" value=\"3\"/>\
                     <data id=\"EncryptionMethodWithXtsRdvDropDown_Name\" value=\"7\"/>"
                        .to_owned()
                ),
                (
                    bl("SystemDrivesRequireStartupAuthentication"),
                    "chr".to_owned(),
                    "<enabled/>\
                     <data id=\"ConfigureNonTPMStartupKeyUsage_Name\" value=\"true\"/>\
                     <data id=\"ConfigureTPMStartupKeyUsageDropDown_Name\" value=\"0\"/>\
                     <data id=\"ConfigurePINUsageDropDown_Name\" value=\"0\"/>\
                     <data id=\"ConfigureTPMPINKeyUsageDropDown_Name\" value=\"0\"/>\
                     <data id=\"ConfigureTPMUsageDropDown_Name\" value=\"1\"/>"
                        .to_owned()
                ),
                (
                    bl("AllowWarningForOtherDiskEncryption"),
                    "int".to_owned(),
                    "0".to_owned()
                ),
                (
                    bl("AllowStandardUserEncryption"),
                    "int".to_owned(),
                    "1".to_owned()
                ),
                (
                    bl("RequireDeviceEncryption"),
                    "int".to_owned(),
                    "1".to_owned()
                ),
            ]
        );
        // A required PIN: exactly one drop-down is required.
        let pin = build("bitlocker", json!({"startup_authentication": "tpm_pin"}));
        let data = pin[1].item.data.as_deref().unwrap();
        assert!(data.contains(r#"<data id="ConfigurePINUsageDropDown_Name" value="1"/>"#));
        assert!(data.contains(r#"<data id="ConfigureTPMUsageDropDown_Name" value="0"/>"#));
        assert_eq!(data.matches("value=\"1\"").count(), 1);
        // The data is XML the profile checks compare structurally.
        assert!(crate::profiles::xml_equivalent(data, data));
    }

    #[test]
    fn windows_update_custom() {
        let up = |n: &str| format!("./Device/Vendor/MSFT/Policy/Config/Update/{n}");
        let t = |n: &str, v: &str| (up(n), "int".to_owned(), v.to_owned());
        assert_eq!(
            triples(&build("windows_update", Value::Null)),
            [
                t("DeferQualityUpdatesPeriodInDays", "0"),
                t("DeferFeatureUpdatesPeriodInDays", "0"),
                t("ConfigureDeadlineForQualityUpdates", "7"),
                t("ConfigureDeadlineForFeatureUpdates", "7"),
                t("ConfigureDeadlineGracePeriod", "2"),
                t("ActiveHoursStart", "8"),
                t("ActiveHoursEnd", "17"),
            ]
        );
        let s = build(
            "windows_update",
            json!({
                "quality_deferral_days": 30,
                "feature_deferral_days": 365,
                "quality_deadline_days": 0,
                "feature_deadline_days": 30,
                "grace_period_days": 7,
                "feature_grace_period_days": 0,
                "active_hours_start": 22,
                "active_hours_end": 6,
                "active_hours_max_range": 8
            }),
        );
        assert_eq!(
            triples(&s),
            [
                t("DeferQualityUpdatesPeriodInDays", "30"),
                t("DeferFeatureUpdatesPeriodInDays", "365"),
                t("ConfigureDeadlineForQualityUpdates", "0"),
                t("ConfigureDeadlineForFeatureUpdates", "30"),
                t("ConfigureDeadlineGracePeriod", "7"),
                t("ConfigureDeadlineGracePeriodForFeatureUpdates", "0"),
                t("ActiveHoursMaxRange", "8"),
                t("ActiveHoursStart", "22"),
                t("ActiveHoursEnd", "6"),
            ]
        );
        // 18 hours is the default limit.
        build(
            "windows_update",
            json!({"active_hours_start": 0, "active_hours_end": 18}),
        );
    }

    #[test]
    fn defender_firewall_camera_custom() {
        let d = |n: &str, v: &str| {
            (
                format!("./Device/Vendor/MSFT/Policy/Config/Defender/{n}"),
                "int".to_owned(),
                v.to_owned(),
            )
        };
        assert_eq!(
            triples(&build("defender", Value::Null)),
            [
                d("AllowRealtimeMonitoring", "1"),
                d("AllowCloudProtection", "1"),
                d("CloudBlockLevel", "2"),
                d("SubmitSamplesConsent", "1"),
            ]
        );
        assert_eq!(
            triples(&build(
                "defender",
                json!({"cloud_block_level": "zero_tolerance", "submit_samples": "never"})
            ))[2..],
            [d("CloudBlockLevel", "6"), d("SubmitSamplesConsent", "2")]
        );
        assert_eq!(
            triples(&build(
                "defender",
                json!({"realtime_monitoring": false, "cloud_protection": false})
            )),
            [
                d("AllowRealtimeMonitoring", "0"),
                d("AllowCloudProtection", "0")
            ]
        );

        let f = |p: &str, v: &str| {
            (
                format!("./Vendor/MSFT/Firewall/MdmStore/{p}/EnableFirewall"),
                "bool".to_owned(),
                v.to_owned(),
            )
        };
        assert_eq!(
            triples(&build("firewall", Value::Null)),
            [
                f("DomainProfile", "true"),
                f("PrivateProfile", "true"),
                f("PublicProfile", "true"),
            ]
        );
        assert_eq!(
            triples(&build("firewall", json!({"domain": false}))),
            [
                f("DomainProfile", "false"),
                f("PrivateProfile", "true"),
                f("PublicProfile", "true"),
            ]
        );

        assert_eq!(
            triples(&build("camera_off", json!({}))),
            [(
                "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera".to_owned(),
                "int".to_owned(),
                "0".to_owned()
            )]
        );
    }

    #[test]
    fn unknown_template_and_parameters() {
        let e = err("passw0rd", Value::Null);
        assert!(matches!(e, TemplateError::UnknownTemplate { .. }));
        let m = e.to_string();
        assert!(
            m.contains("\"passw0rd\"") && m.contains("password, bitlocker"),
            "{m}"
        );

        let e = err("password", json!({"minimum_length": 8}));
        let m = e.to_string();
        assert!(matches!(e, TemplateError::UnknownParam { .. }));
        assert!(
            m.contains("\"minimum_length\"") && m.contains("min_length"),
            "{m}"
        );

        let m = err("camera_off", json!({"x": 1})).to_string();
        assert!(m.contains("\"x\"") && m.contains("(none)"), "{m}");

        for bad in [json!([]), json!("x"), json!(3)] {
            assert!(matches!(
                err("password", bad),
                TemplateError::NotAnObject {
                    template: "password"
                }
            ));
        }
    }

    #[test]
    fn wrong_types_name_the_parameter_and_what_it_takes() {
        let m = err("password", json!({"min_length": "12"})).to_string();
        assert_eq!(
            m,
            "password: min_length must be an integer from 4 to 16, not \"12\""
        );
        let m = err("password", json!({"min_length": 12.5})).to_string();
        assert!(
            m.contains("min_length must be an integer from 4 to 16, not 12.5"),
            "{m}"
        );
        let m = err("firewall", json!({"public": "yes"})).to_string();
        assert_eq!(m, "firewall: public must be true or false, not \"yes\"");
        let m = err("firewall", json!({"public": 1})).to_string();
        assert!(m.contains("public must be true or false, not 1"), "{m}");
        let m = err("bitlocker", json!({"os_encryption_method": 7})).to_string();
        assert_eq!(
            m,
            "bitlocker: os_encryption_method must be one of aes_cbc_128, aes_cbc_256, \
             xts_aes_128, xts_aes_256, not 7"
        );
        let long = "y".repeat(500);
        let m = err("firewall", json!({ "domain": long })).to_string();
        assert!(m.len() < 200, "{m}");
    }

    #[test]
    fn out_of_range_and_bad_choices() {
        for (name, params, needle) in [
            (
                "password",
                json!({"min_length": 3}),
                "min_length must be from 4 to 16, not 3",
            ),
            (
                "password",
                json!({"min_length": 17}),
                "min_length must be from 4 to 16, not 17",
            ),
            (
                "password",
                json!({"complexity": 4}),
                "complexity must be from 0 to 3, not 4",
            ),
            (
                "password",
                json!({"max_failed_attempts": 1000}),
                "max_failed_attempts must be from 0 to 999",
            ),
            (
                "password",
                json!({"inactivity_minutes": -1}),
                "inactivity_minutes must be from 0 to 999, not -1",
            ),
            (
                "password",
                json!({"expiration_days": 731}),
                "expiration_days must be from 0 to 730",
            ),
            (
                "password",
                json!({"history": 51}),
                "history must be from 0 to 50",
            ),
            (
                "windows_update",
                json!({"quality_deferral_days": 31}),
                "quality_deferral_days must be from 0 to 30",
            ),
            (
                "windows_update",
                json!({"feature_deferral_days": 366}),
                "feature_deferral_days must be from 0 to 365",
            ),
            (
                "windows_update",
                json!({"grace_period_days": 8}),
                "grace_period_days must be from 0 to 7",
            ),
            (
                "windows_update",
                json!({"active_hours_end": 24}),
                "active_hours_end must be from 0 to 23",
            ),
            (
                "windows_update",
                json!({"active_hours_max_range": 7}),
                "active_hours_max_range must be from 8 to 18",
            ),
            (
                "windows_update",
                json!({"quality_deadline_days": u64::MAX}),
                "quality_deadline_days must be an integer from 0 to 30",
            ),
        ] {
            let m = err(name, params).to_string();
            assert!(m.starts_with(&format!("{name}: ")), "{m}");
            assert!(m.contains(needle), "{m}");
        }
        let e = err("defender", json!({"cloud_block_level": "moderate"}));
        assert!(matches!(e, TemplateError::NotAChoice { .. }));
        assert_eq!(
            e.to_string(),
            "defender: cloud_block_level must be one of not_configured, high, high_plus, \
             zero_tolerance, not \"moderate\""
        );
        let m = err("bitlocker", json!({"startup_authentication": "pin"})).to_string();
        assert!(
            m.contains("startup_authentication must be one of not_configured, tpm"),
            "{m}"
        );
    }

    #[test]
    fn parameters_that_do_not_go_together() {
        for (name, params, needle) in [
            (
                "windows_update",
                json!({"active_hours_start": 9, "active_hours_end": 9}),
                "active_hours_end (9) must differ from active_hours_start (9)",
            ),
            (
                "windows_update",
                json!({"active_hours_start": 0, "active_hours_end": 19}),
                "span 19 hours, more than the 18 allowed",
            ),
            (
                "windows_update",
                json!({"active_hours_start": 20, "active_hours_end": 6, "active_hours_max_range": 8}),
                "span 10 hours, more than the 8 allowed",
            ),
            (
                "defender",
                json!({"cloud_protection": false, "cloud_block_level": "high"}),
                "cloud_block_level high needs cloud_protection",
            ),
            (
                "defender",
                json!({"cloud_protection": false, "submit_samples": "send_all"}),
                "submit_samples needs cloud_protection",
            ),
            (
                "bitlocker",
                json!({"allow_without_tpm": true}),
                "allow_without_tpm needs startup_authentication",
            ),
            (
                "bitlocker",
                json!({"silent": true, "startup_authentication": "tpm_pin"}),
                "silent encryption can't require a startup PIN or key",
            ),
        ] {
            let e = err(name, params);
            assert!(matches!(e, TemplateError::Conflict { .. }), "{e}");
            let m = e.to_string();
            assert!(
                m.starts_with(&format!("{name}: ")) && m.contains(needle),
                "{m}"
            );
        }
        // Without cloud protection, not_configured is accepted and nothing is sent.
        let s = build(
            "defender",
            json!({"cloud_protection": false, "cloud_block_level": "not_configured"}),
        );
        assert_eq!(s.len(), 2);
    }
}
