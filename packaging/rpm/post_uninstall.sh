# rolecall %postun (cargo-generate-rpm post_uninstall_script). $1 = 0 on
# erase, >= 1 on upgrade. The equivalent of %systemd_postun_with_restart, but
# non-blocking: a host still waiting for its role never sends READY=1
# (TimeoutStartSec=infinity), so a blocking restart would hang the upgrade.
# RPM has no purge: /var/lib/rolecall stays on erase if it holds state, and
# changed %config(noreplace) files are kept as *.rpmsave.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl --no-block try-restart rolecall.service >/dev/null 2>&1 || :
    fi
fi
