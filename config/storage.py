"""Static files in production: whitenoise's compressed, hashed (manifest) storage, with
Django's rewriting of ES module imports switched on, so that `import ... from
"./socket.js"` in a hashed module names the hashed file too. Every module can then be
cached for ever, and a deploy never mixes an old module with a new one."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True
