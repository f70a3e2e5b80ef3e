# rolecall %post (cargo-generate-rpm post_install_script). $1 = number of
# installed instances after this transaction: 1 on first install.

# The state directory (lock, cached map, managed-file records, status):
# cargo-generate-rpm cannot ship an empty directory. systemd's StateDirectory=
# would create it at first start, but `rolecall sync`, `status` and `check`
# may run before that.
install -d -m 0755 /var/lib/rolecall

# The RPM-distro equivalent of %systemd_post: on first install apply the
# preset (90-rolecall.preset enables the unit; an admin preset can override
# it). Never starts the agent: a package install on an image build host must
# not run it.
if [ "$1" -eq 1 ] && [ -x /usr/bin/systemctl ]; then
    systemctl --no-reload preset rolecall.service >/dev/null 2>&1 || :
fi
