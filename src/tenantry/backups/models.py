"""The backups domain keeps no tables of its own yet: a platform's backups are in its
repository and reported by its agent (`platforms.observed.backup`); the ISV's escrowed
passphrases are on its row (`isvs.backup_key`, `isvs.files_key`)."""
