# rolecall %preun (cargo-generate-rpm pre_uninstall_script). $1 = 0 on erase,
# >= 1 on upgrade. The equivalent of %systemd_preun: on erase, disable and
# stop the unit (SIGTERM lets the current service transaction finish).
if [ "$1" -eq 0 ] && [ -x /usr/bin/systemctl ]; then
    systemctl --no-reload disable --now rolecall.service >/dev/null 2>&1 || :
fi
