# frozen_string_literal: true

# tests/validate.rb: validates the bakery BOSH release without the bosh CLI (Ruby stdlib only).
#
# Checks config/final.yml and blobs.yml, every job spec and its templates, every package
# spec, packaging script and spec.lock, renders every template with the cases of
# example-properties.yml (writing the results under --out DIR, as
# DIR/<case>/jobs/<job>/<destination>; without --out, a temp dir removed at exit), checks
# what came out, and checks the example manifests and the Concourse pipeline. Prints one
# line per check and `N passed, M failed, K skipped`.
#
# usage: ruby tests/validate.rb [--out DIR]

require 'fileutils'
require 'ipaddr'
require 'json'
require 'open3'
require 'tmpdir'
require 'yaml'
require_relative 'template_renderer'

RELEASE_DIR = File.expand_path('..', __dir__)
REPO_DIR = File.expand_path('..', RELEASE_DIR)

# Counts and prints checks.
class Checks
  attr_reader :passed, :failed, :skipped

  def initialize
    @passed = 0
    @failed = 0
    @skipped = 0
  end

  # Records a check that cannot run here, and why.
  def skip(name)
    @skipped += 1
    puts "SKIP - #{name}"
  end

  # Runs the block as one check: it fails when the block raises or returns false.
  def check(name)
    result = yield
    if result == false
      fail_with(name, 'condition is false')
    else
      @passed += 1
      puts "ok - #{name}"
    end
  rescue StandardError, ScriptError => e
    fail_with(name, "#{e.class}: #{e.message}")
  end

  private

  def fail_with(name, message)
    @failed += 1
    puts "not ok - #{name}: #{message}"
  end
end

# Raises with the message unless the condition holds.
def expect(condition, message)
  raise message unless condition

  true
end

def load_yaml(path)
  YAML.safe_load(File.read(path), permitted_classes: [], aliases: true)
end

def bash_syntax_ok(path)
  _out, err, status = Open3.capture3('bash', '-n', path)
  expect(status.success?, "bash -n #{path}: #{err.strip}")
end

def rel(path)
  path.delete_prefix("#{REPO_DIR}/")
end

out_dir = nil
temporary_out_dir = nil
args = ARGV.dup
until args.empty?
  arg = args.shift
  case arg
  when '--out' then out_dir = args.shift or abort('validate.rb: --out needs a directory')
  else abort("validate.rb: unknown argument #{arg}")
  end
end
if out_dir
  FileUtils.mkdir_p(out_dir)
else
  out_dir = Dir.mktmpdir('bakery-release-rendered-')
  temporary_out_dir = out_dir
  at_exit { FileUtils.rm_rf(temporary_out_dir) }
end

c = Checks.new

# --- release config -------------------------------------------------------------------------

c.check('config/final.yml names the release and a blobstore') do
  final = load_yaml(File.join(RELEASE_DIR, 'config/final.yml'))
  expect(final['name'] == 'bakery', "name is #{final['name'].inspect}, want bakery")
  expect(final.dig('blobstore', 'provider').is_a?(String), 'no blobstore.provider')
  expect(final.dig('blobstore', 'options').is_a?(Hash), 'no blobstore.options')
end

c.check('config/blobs.yml is a map of blobs with size and sha') do
  blobs = load_yaml(File.join(RELEASE_DIR, 'config/blobs.yml'))
  expect(blobs.is_a?(Hash), "blobs.yml is a #{blobs.class}, want a map")
  blobs.each do |path, blob|
    expect(blob.is_a?(Hash) && blob['size'].is_a?(Integer) && blob['sha'].is_a?(String),
           "blob #{path} lacks size or sha")
  end
end

c.check('src/ exists (bosh create-release needs it)') do
  expect(File.directory?(File.join(RELEASE_DIR, 'src')), 'bosh-release/src is missing')
end

# --- packages -------------------------------------------------------------------------------

package_dirs = Dir[File.join(RELEASE_DIR, 'packages/*')].select { |d| File.directory?(d) }.sort
package_names = package_dirs.map { |d| File.basename(d) }

package_dirs.each do |dir|
  name = File.basename(dir)
  if File.exist?(File.join(dir, 'spec.lock'))
    c.check("package #{name}: spec.lock records a vendored package (name, sha256 fingerprint)") do
      lock = load_yaml(File.join(dir, 'spec.lock'))
      expect(lock.keys.sort == %w[fingerprint name], "spec.lock keys are #{lock.keys}")
      expect(lock['name'] == name, "spec.lock name #{lock['name']} is not #{name}")
      expect(lock['fingerprint'].to_s.match?(/\A[0-9a-f]{64}\z/), 'fingerprint is not 64 hex digits')
      expect(!File.exist?(File.join(dir, 'spec')), 'a vendored package has spec.lock only, no spec')
    end
    next
  end

  c.check("package #{name}: spec parses with name, dependencies and files") do
    spec = load_yaml(File.join(dir, 'spec'))
    expect(spec['name'] == name, "spec name #{spec['name'].inspect} is not the directory #{name}")
    expect(spec['files'].is_a?(Array) && !spec['files'].empty?, 'spec lists no files')
    (spec['dependencies'] || []).each do |dependency|
      expect(package_names.include?(dependency), "dependency #{dependency} is not a package of this release")
    end
    true
  end
  c.check("package #{name}: packaging passes bash -n") do
    bash_syntax_ok(File.join(dir, 'packaging'))
  end
end

# --- jobs -----------------------------------------------------------------------------------

job_dirs = Dir[File.join(RELEASE_DIR, 'jobs/*')].select { |d| File.directory?(d) }.sort
job_specs = {}

job_dirs.each do |dir|
  name = File.basename(dir)
  c.check("job #{name}: spec parses; templates exist and are all used; packages exist") do
    spec = load_yaml(File.join(dir, 'spec'))
    job_specs[name] = spec
    expect(spec['name'] == name, "spec name #{spec['name'].inspect} is not the directory #{name}")
    expect(File.exist?(File.join(dir, 'monit')), 'no monit file')
    templates = spec['templates'] || {}
    templates.each_key do |source|
      expect(File.file?(File.join(dir, 'templates', source)), "template #{source} does not exist")
    end
    on_disk = Dir.children(File.join(dir, 'templates')).sort
    expect(on_disk == templates.keys.sort, "templates on disk #{on_disk} differ from the spec's #{templates.keys.sort}")
    expect(templates.values.uniq.size == templates.size, 'two templates render to the same file')
    (spec['packages'] || []).each do |package|
      expect(package_names.include?(package), "package #{package} is not a package of this release")
    end
    true
  end
  c.check("job #{name}: every declared property is used by a template or monit") do
    spec = load_yaml(File.join(dir, 'spec'))
    sources = [File.read(File.join(dir, 'monit'))] +
              (spec['templates'] || {}).keys.map { |source| File.read(File.join(dir, 'templates', source)) }
    text = sources.join("\n")
    unused = (spec['properties'] || {}).keys.reject { |property| text.include?("'#{property}") }
    expect(unused.empty?, "declared but never read: #{unused.join(', ')}")
  end
  c.check("job #{name}: every property has a description") do
    spec = load_yaml(File.join(dir, 'spec'))
    missing = (spec['properties'] || {}).reject { |_, d| d.is_a?(Hash) && d['description'].is_a?(String) }.keys
    expect(missing.empty?, "no description: #{missing.join(', ')}")
  end
end

# --- rendering ------------------------------------------------------------------------------

examples = load_yaml(File.join(__dir__, 'example-properties.yml'))
rendered = {}

examples.fetch('cases').each do |example|
  job = example.fetch('job')
  case_name = example.fetch('name')
  job_dir = File.join(RELEASE_DIR, 'jobs', job)

  c.check("#{case_name}: example properties are all declared by job #{job}") do
    renderer = BoshTemplate::JobRenderer.new(job_dir)
    unknown = BoshTemplate.undeclared(renderer.job_spec, example['properties'] || {})
    expect(unknown.empty?, "not in the spec: #{unknown.join(', ')}")
  end

  c.check("#{case_name}: every template of job #{job} renders") do
    renderer = BoshTemplate::JobRenderer.new(job_dir)
    files = renderer.render_all(example['properties'] || {}, example['spec'] || {})
    # The inputs, for check-rendered.sh (e.g. print-dnsmasq-config with the same subnet).
    FileUtils.mkdir_p(File.join(out_dir, case_name))
    File.write(File.join(out_dir, case_name, 'case.json'),
               JSON.pretty_generate('job' => job, 'properties' => example['properties'] || {},
                                    'spec' => renderer.default_spec.merge(example['spec'] || {})))
    files.each do |destination, content|
      path = File.join(out_dir, case_name, 'jobs', job, destination)
      FileUtils.mkdir_p(File.dirname(path))
      File.write(path, content)
      File.chmod(0o755, path) if destination.start_with?('bin/')
    end
    rendered[case_name] = files
  end

  next unless rendered[case_name]

  rendered[case_name].each do |destination, content|
    next unless content.start_with?('#!') && content.lines.first.include?('bash')

    c.check("#{case_name}: rendered #{job}/#{destination} passes bash -n") do
      bash_syntax_ok(File.join(out_dir, case_name, 'jobs', job, destination))
    end
  end
end

# Parses the `key = value` lines bakery.toml.erb writes (values are JSON-compatible scalars).
def parse_simple_toml(text)
  text.lines.each_with_object({}) do |line, result|
    line = line.strip
    next if line.empty? || line.start_with?('#')

    key, value = line.split(' = ', 2)
    raise "bakery.toml: line #{line.inspect} is not `key = value`" unless value && key.match?(/\A[a-z0-9_]+\z/)
    raise "bakery.toml: key #{key} appears twice" if result.key?(key)

    result[key] = JSON.parse(value)
  end
end

def files_of(rendered, case_name)
  rendered.fetch(case_name) { raise "case #{case_name} did not render" }
end

c.check('bakery-full: bakery.toml carries every set property with the right type') do
  toml = parse_simple_toml(files_of(rendered, 'bakery-full')['config/bakery.toml'])
  job = '/var/vcap/jobs/bakery/config'
  want = {
    'listen' => '0.0.0.0:8080', 'data_dir' => '/var/vcap/store/bakery', 'nfs_address' => '10.0.0.2',
    'db_path' => '/var/vcap/store/bakery/db/bakery.db', 'boot_root_dir' => '/var/vcap/store/bakery/boot-root',
    'tftp_listen' => '0.0.0.0:69', 'nfs_backend' => 'kernel', 'exports_file' => '/etc/exports.d/bakery.exports',
    'max_image_size' => 8_589_934_592, 'export_options' => 'rw,sync,no_subtree_check,no_root_squash',
    'ppi' => '/var/vcap/packages/bakery/bin/bakery-ppi-simpleweb',
    'ppi_config' => "#{job}/ppi-config", 'ppi_timeout' => 30.0, 'power_cycle_pause' => 2.5,
    'export_to_any' => false, 'cmdline_template' => "#{job}/cmdline-template",
    'cloud_init_url' => 'http://10.0.0.2:8080/cloud-init/',
    'token_file' => "#{job}/token", 'tls_cert' => "#{job}/tls.crt", 'tls_key' => "#{job}/tls.key",
    'boot_files_require_token' => true, 'max_pis' => 200, 'warm_pool' => 1,
    'upload_idle_timeout' => 120.0, 'max_concurrent_uploads' => 2,
    'min_free_space' => 2_147_483_648,
    'nbd_config' => '/var/vcap/data/bakery/nbd-server.conf', 'nbd_port' => 10810,
    'mkfs_ext4_cmd' => '/sbin/mkfs.ext4'
  }
  expect(toml == want, "got #{toml.inspect}")
  expect(toml['ppi_timeout'].is_a?(Float), 'ppi_timeout must be a TOML float (bakery-server reads f64)')
end

c.check('bakery-full: the cmdline template file holds the template text') do
  text = files_of(rendered, 'bakery-full')['config/cmdline-template']
  expect(text.start_with?('console=serial0,115200 root=/dev/nfs nfsroot={{nfs_server}}:{{nfs_root}},vers=3'), text.inspect)
end

c.check('bakery-bpm: a max_image_size or min_free_space with a unit stays a string') do
  toml = parse_simple_toml(files_of(rendered, 'bakery-bpm')['config/bakery.toml'])
  expect(toml['max_image_size'] == '8G' && toml['min_free_space'] == '5G' && toml['exportfs_cmd'] == '/var/vcap/packages/nfs-helper/bin/reexport', toml.inspect)
end

c.check('bakery-defaults: bakery.toml has only the defaults and the instance address as NFS address') do
  toml = parse_simple_toml(files_of(rendered, 'bakery-defaults')['config/bakery.toml'])
  expect(toml['nfs_address'] == '192.168.50.4', "nfs_address #{toml['nfs_address'].inspect}")
  expect(toml.keys.sort == %w[data_dir exports_file listen nfs_address nfs_backend tftp_listen], "keys #{toml.keys.sort}")
  expect(toml['nfs_backend'] == 'kernel' && toml['exports_file'] == '/etc/exports.d/bakery.exports', toml.inspect)
end

c.check('bakery-full: token, TLS and PPI config files hold the property values') do
  files = files_of(rendered, 'bakery-full')
  want_tokens = %(s3cr3t-token-"quoted"\nnext-admin-token-0123456789\nro:metrics-read-only-0123456789\n)
  expect(files['config/token'] == want_tokens, "token file #{files['config/token'].inspect}")
  expect(files['config/tls.crt'].include?("CERT\n-----END CERTIFICATE-----"), 'tls.crt lacks the certificate')
  expect(files['config/tls.key'].include?('KEY'), 'tls.key lacks the key')
  ppi = JSON.parse(files['config/ppi-config'])
  expect(ppi == { 'url' => 'http://10.0.0.9', 'pis' => { '1a2b3c4d' => 1, '5e6f7a8b' => 2 } }, "ppi config #{ppi}")
end

c.check('bakery-defaults: no token, no TLS: their files are empty') do
  files = files_of(rendered, 'bakery-defaults')
  expect(files['config/token'].strip.empty? && files['config/tls.key'].strip.empty?, 'secret files are not empty')
end

c.check('bakery-bpm: a string PPI config is written as it is') do
  ppi = files_of(rendered, 'bakery-bpm')['config/ppi-config']
  expect(ppi == %({"url": "http://10.0.0.9", "pis": {}}\n), "ppi config #{ppi.inspect}")
end

c.check('bakery-full: dnsmasq is a proxy-DHCP for the subnet pointing at the TFTP server, DNS off') do
  lines = files_of(rendered, 'bakery-full')['config/dnsmasq.conf'].lines.map(&:strip)
  ['port=0', 'dhcp-range=10.0.0.0,proxy,255.255.255.0', 'pxe-service=0,"Raspberry Pi Boot",bootcode,10.0.0.2',
   'interface=eth0', 'log-dhcp', 'dhcp-no-override'].each do |line|
    expect(lines.include?(line), "no line #{line} in #{lines}")
  end
  expect(lines.none? { |l| l.start_with?('enable-tftp') }, 'dnsmasq must not serve TFTP')
end

dnsmasq = ['/usr/sbin/dnsmasq', *ENV.fetch('PATH', '').split(':').map { |d| File.join(d, 'dnsmasq') }]
          .find { |path| File.executable?(path) }
rendered.each do |case_name, files|
  next unless files['config/dnsmasq.conf']&.include?('dhcp-range=')

  if dnsmasq
    c.check("#{case_name}: the real dnsmasq accepts the rendered dnsmasq.conf (dnsmasq --test)") do
      path = File.join(out_dir, case_name, 'jobs/bakery/config/dnsmasq.conf')
      out, status = Open3.capture2e(dnsmasq, '--test', "--conf-file=#{path}")
      expect(status.success?, "dnsmasq --test: #{out.strip}")
    end
  else
    c.skip("#{case_name}: dnsmasq --test of the rendered dnsmasq.conf (no dnsmasq; Debian package dnsmasq-base)")
  end
end

c.check('bakery-bpm: dnsmasq uses the tftp_server property') do
  text = files_of(rendered, 'bakery-bpm')['config/dnsmasq.conf']
  expect(text.include?('pxe-service=0,"Raspberry Pi Boot",bootcode,10.0.0.3'), text)
end

c.check('bakery-defaults: dnsmasq is off: no dnsmasq in monit, no DHCP config') do
  files = files_of(rendered, 'bakery-defaults')
  expect(!files['monit'].include?('dnsmasq'), 'monit starts dnsmasq')
  expect(!files['config/dnsmasq.conf'].include?('dhcp-range'), 'dnsmasq.conf has a dhcp-range')
  expect(files['monit'].include?('/var/vcap/jobs/bakery/bin/ctl start bakery'), 'monit does not use bin/ctl')
end

c.check('bakery-full: monit runs bakery and dnsmasq through bin/ctl') do
  monit = files_of(rendered, 'bakery-full')['monit']
  expect(monit.scan(/^check process (\S+)/).flatten == %w[bakery bakery-dnsmasq], monit)
  expect(monit.include?('bin/ctl start dnsmasq'), monit)
end

c.check('bakery-bpm: monit uses bpm; bpm.yml has both processes and mounts the data dir') do
  files = files_of(rendered, 'bakery-bpm')
  expect(files['monit'].include?('/var/vcap/jobs/bpm/bin/bpm start bakery -p dnsmasq'), files['monit'])
  bpm = YAML.safe_load(files['config/bpm.yml'])
  processes = bpm.fetch('processes')
  expect(processes.map { |p| p['name'] } == %w[bakery dnsmasq], "processes #{processes}")
  bakery = processes[0]
  expect(bakery['executable'] == '/var/vcap/packages/bakery/bin/bakery-server', bakery['executable'])
  expect(bakery['args'] == ['--config', '/var/vcap/jobs/bakery/config/bakery.toml'], bakery['args'].inspect)
  expect(bakery['additional_volumes'] == [{ 'path' => '/var/vcap/data/bakery-data', 'writable' => true }],
         bakery['additional_volumes'].inspect)
  expect(processes[1]['args'].include?('--conf-file=/var/vcap/jobs/bakery/config/dnsmasq.conf'), processes[1].inspect)
end

c.check('bakery-defaults: bpm.yml still parses (one process, no dnsmasq)') do
  bpm = YAML.safe_load(files_of(rendered, 'bakery-defaults')['config/bpm.yml'])
  expect(bpm['processes'].map { |p| p['name'] } == ['bakery'], bpm.inspect)
end

c.check('bakery-cpi-explicit: cpi.json has the url, token, agent and numbers from the properties') do
  cpi = JSON.parse(files_of(rendered, 'bakery-cpi-explicit')['config/cpi.json'])
  want = {
    'url' => 'https://10.0.0.2:8080/api/v1', 'token' => 's3cr3t-token-"quoted"',
    'ca_cert' => "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
    'default_ephemeral_disk_mib' => 4096, 'bake_timeout_seconds' => 600,
    'agent' => {
      'mbus' => 'nats://nats:nats-password@10.0.0.6:4222', 'ntp' => ['10.0.0.1'],
      'blobstore' => { 'provider' => 'dav', 'options' => {
        'endpoint' => 'http://10.0.0.6:25250', 'user' => 'agent', 'password' => 'agent-password'
      } }
    }
  }
  expect(cpi == want, "got #{cpi.inspect}")
end

c.check('bakery-cpi-explicit: bin/cpi execs bakery-cpi with the config and sets the proxies') do
  cpi = files_of(rendered, 'bakery-cpi-explicit')['bin/cpi']
  expect(cpi.include?('exec "$BOSH_PACKAGES_DIR/bakery/bin/bakery-cpi" --config "$BOSH_JOBS_DIR/bakery_cpi/config/cpi.json"'), cpi)
  expect(cpi.include?('export HTTP_PROXY=http://proxy.example:3128'), cpi)
  expect(!cpi.include?('HTTPS_PROXY'), 'HTTPS_PROXY set though env.https_proxy is not')
end

c.check('bakery-cpi-director-wide: mbus and dav blobstore come from nats.* and blobstore.*; no url') do
  cpi = JSON.parse(files_of(rendered, 'bakery-cpi-director-wide')['config/cpi.json'])
  agent = cpi.fetch('agent')
  expect(agent['mbus'] == 'nats://nats:nats-password@10.0.0.6:4222', agent['mbus'].inspect)
  expect(agent['blobstore'] == { 'provider' => 'dav', 'options' => {
    'user' => 'agent', 'password' => 'agent-password', 'endpoint' => 'https://10.0.0.6:25250',
    'tls' => { 'cert' => { 'ca' => "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n" } }
  } }, agent['blobstore'].inspect)
  expect(agent['ntp'] == %w[0.pool.ntp.org 1.pool.ntp.org], agent['ntp'].inspect)
  expect(!cpi.key?('url') && !cpi.key?('token'), 'url/token rendered though unset (the CPI config gives them)')
end

# The helper really enforces what the director enforces: these must fail to render.
bakery_renderer = BoshTemplate::JobRenderer.new(File.join(RELEASE_DIR, 'jobs/bakery'))
c.check('rendering fails when dnsmasq is enabled without a subnet (unknown property)') do
  bakery_renderer.render_file('templates/dnsmasq.conf.erb', { 'dnsmasq' => { 'enabled' => true } })
  raise 'rendered without dnsmasq.subnet'
rescue BoshTemplate::UnknownProperty => e
  expect(e.message.include?('dnsmasq.subnet'), e.message)
end

c.check('rendering fails with a clear message for a subnet that is not CIDR') do
  bakery_renderer.render_file('templates/dnsmasq.conf.erb', { 'dnsmasq' => { 'enabled' => true, 'subnet' => '10.0.0.300/24' } })
  raise 'rendered with a bad subnet'
rescue RuntimeError => e
  expect(e.message.include?('10.0.0.300/24') && e.message.include?('not a CIDR'), e.message)
end

c.check('rendering fails with a clear message for a TFTP server that is not an IP address') do
  bakery_renderer.render_file('templates/dnsmasq.conf.erb',
                              { 'dnsmasq' => { 'enabled' => true, 'subnet' => '10.0.0.0/24', 'tftp_server' => 'bakery.example' } })
  raise 'rendered with a host name as TFTP server'
rescue RuntimeError => e
  expect(e.message.include?('"bakery.example" is not an IP address'), e.message)
end

c.check('bakery-ganesha: bakery.toml selects ganesha, its include path, pid file and export ids; no exportfs') do
  toml = parse_simple_toml(files_of(rendered, 'bakery-ganesha')['config/bakery.toml'])
  expect(toml['nfs_backend'] == 'ganesha', toml.inspect)
  expect(toml['exports_file'] == '/etc/ganesha/bakery.conf', "exports_file #{toml['exports_file'].inspect}")
  expect(toml['ganesha_pid_file'] == '/var/vcap/sys/run/nfs-ganesha/ganesha.pid', toml.inspect)
  expect(toml['ganesha_export_id_base'] == 2000, "export id base #{toml['ganesha_export_id_base'].inspect} (must be a TOML integer)")
  expect(!toml.key?('exportfs_cmd'), 'exportfs_cmd rendered: it would replace the SIGHUP')
end

c.check('bakery-ganesha: pre-start checks that ganesha.conf includes the exports file, not for exportfs') do
  pre_start = files_of(rendered, 'bakery-ganesha')['bin/pre-start']
  expect(pre_start.include?('ganesha_config=/etc/ganesha/ganesha.conf'), pre_start)
  expect(pre_start.include?('exports_file=/etc/ganesha/bakery.conf') && pre_start.include?(%(include_line="%include \\"$exports_file\\"")), pre_start)
  expect(pre_start.include?('exit 1') && !pre_start.include?('command -v exportfs'), 'pre-start checks exportfs or never fails')
  bpm = YAML.safe_load(files_of(rendered, 'bakery-ganesha')['config/bpm.yml'])
  volumes = bpm['processes'][0].dig('unsafe', 'unrestricted_volumes')
  expect(volumes == [{ 'path' => '/etc/ganesha', 'writable' => true }], volumes.inspect)
end

c.check('bakery-ganesha-bpm: ganesha reloaded by the command; bpm mounts the exports file dir only') do
  files = files_of(rendered, 'bakery-ganesha-bpm')
  toml = parse_simple_toml(files['config/bakery.toml'])
  expect(toml['exports_file'] == '/var/vcap/data/ganesha/bakery.conf' && toml['exportfs_cmd'] == '/var/vcap/jobs/nfs-ganesha/bin/reload', toml.inspect)
  expect(!toml.key?('ganesha_pid_file') && !toml.key?('ganesha_export_id_base'), toml.inspect)
  volumes = YAML.safe_load(files['config/bpm.yml'])['processes'][0].dig('unsafe', 'unrestricted_volumes')
  expect(volumes == [{ 'path' => '/var/vcap/data/ganesha', 'writable' => true }], volumes.inspect)
  expect(files['bin/pre-start'].include?('ganesha_config=/var/vcap/jobs/nfs-ganesha/config/ganesha.conf'), files['bin/pre-start'])
end

c.check('bakery-hooktftp: TFTP off, Pis pinned, inventory capped, token on, boot path open') do
  files = files_of(rendered, 'bakery-hooktftp')
  toml = parse_simple_toml(files['config/bakery.toml'])
  expect(toml['tftp_listen'] == 'off' && toml['pin_pi_addresses'] == true && toml['max_pis'] == 64, toml.inspect)
  expect(toml['token_file'] == '/var/vcap/jobs/bakery/config/token' && !toml.key?('boot_files_require_token'), toml.inspect)
  expect(files['config/token'] == "hooktftp-admin-token-0123456789\n", files['config/token'].inspect)
  lines = files['config/dnsmasq.conf'].lines.map(&:strip)
  expect(lines.include?('pxe-service=0,"Raspberry Pi Boot",bootcode,10.0.0.7'), lines.inspect)
  expect(!lines.include?('log-dhcp'), 'log-dhcp though dnsmasq.log_dhcp is false')
end

c.check('bakery-defaults: no token, no TLS, no security settings in bakery.toml') do
  toml = parse_simple_toml(files_of(rendered, 'bakery-defaults')['config/bakery.toml'])
  unexpected = %w[token_file tls_cert tls_key boot_files_require_token max_pis pin_pi_addresses ganesha_pid_file] & toml.keys
  expect(unexpected.empty?, "rendered #{unexpected}")
end

# Manifests the director would accept but bakery-server could not use (or could not use
# safely) fail at render time, with a message that names the properties.
[
  ['a ganesha pid file together with a reload command',
   { 'nfs' => { 'backend' => 'ganesha', 'exportfs_cmd' => '/bin/true', 'ganesha' => { 'pid_file' => '/run/g.pid' } } },
   'bakery.nfs.ganesha.pid_file and bakery.nfs.exportfs_cmd are both set'],
  ['a ganesha pid file with the kernel backend',
   { 'nfs' => { 'ganesha' => { 'pid_file' => '/run/g.pid' } } }, 'bakery.nfs.ganesha.pid_file is set but bakery.nfs.backend is kernel'],
  ['an NFS backend that does not exist', { 'nfs' => { 'backend' => 'knfsd' } }, 'bakery.nfs.backend "knfsd" is not kernel or ganesha'],
  ['export id base 0', { 'nfs' => { 'backend' => 'ganesha', 'ganesha' => { 'export_id_base' => 0 } } },
   'bakery.nfs.ganesha.export_id_base 0 is not a number from 1 to 65535'],
  ['a token on the boot path with TFTP off (HookTFTP cannot send one)',
   { 'tftp_listen' => 'off', 'token' => 'a-long-enough-admin-token', 'boot_files_require_token' => true },
   'bakery.tftp_listen off: Pis boot through HookTFTP'],
  ['a token on the boot path without any token', { 'boot_files_require_token' => true }, 'needs a token: set bakery.token'],
  ['max_pis 0', { 'max_pis' => 0 }, 'bakery.max_pis 0 is not a whole number of at least 1']
].each do |what, bakery, message|
  c.check("rendering bakery.toml fails for #{what}") do
    bakery_renderer.render_file('templates/bakery.toml.erb', { 'bakery' => bakery })
    raise 'rendered'
  rescue RuntimeError => e
    raise if e.message == 'rendered'

    expect(e.message.include?(message), "message #{e.message.inspect} lacks #{message.inspect}")
  end
end

c.check('rendering bakery.toml fails for ganesha under bpm without a reload command') do
  bakery_renderer.render_file('templates/bakery.toml.erb', { 'bpm' => { 'enabled' => true }, 'bakery' => { 'nfs' => { 'backend' => 'ganesha' } } })
  raise 'rendered'
rescue RuntimeError => e
  expect(e.message.include?('needs bakery.nfs.exportfs_cmd'), e.message)
end

[
  ['a short token', { 'token' => 'short' }, 'bakery.token is not a usable token'],
  ['a token with a space', { 'extra_tokens' => ['has a space but is long'] }, 'bakery.extra_tokens[0] is not a usable token'],
  ['an admin token that reads as read-only', { 'token' => 'ro:looks-read-only-token' }, 'bakery.token starts with ro:'],
  ['a short read-only token', { 'read_only_tokens' => ['x' * 20, 'tiny'] }, 'bakery.read_only_tokens[1] is not a usable token']
].each do |what, bakery, message|
  c.check("rendering the token file fails for #{what}, without showing the token") do
    bakery_renderer.render_file('templates/token.erb', { 'bakery' => bakery })
    raise 'rendered'
  rescue RuntimeError => e
    raise if e.message == 'rendered'

    expect(e.message.include?(message), "message #{e.message.inspect} lacks #{message.inspect}")
    secrets = [bakery['token'], *bakery['extra_tokens'], *bakery['read_only_tokens']].compact
    expect(secrets.none? { |t| e.message.include?(t) }, 'the message shows the token')
  end
end

c.check('a template reading an undeclared property fails (the director hides it)') do
  context = BoshTemplate::EvaluationContext.new(BoshTemplate.job_properties(bakery_renderer.job_spec, { 'nope' => 1 }), {})
  context.p('nope')
  raise 'undeclared property was readable'
rescue BoshTemplate::UnknownProperty
  true
end

# --- manifests ------------------------------------------------------------------------------

manifests = File.join(RELEASE_DIR, 'manifests')

c.check('manifests/cpi-config.yml declares uniquely named CPIs, bakery ones with a url') do
  cpis = load_yaml(File.join(manifests, 'cpi-config.yml')).fetch('cpis')
  names = cpis.map { |cpi| cpi['name'] }
  expect(names.all?(String) && names.uniq.size == names.size, "cpi names #{names} are not unique strings")
  bakery = cpis.select { |cpi| cpi['type'] == 'bakery' }
  expect(!bakery.empty?, 'no cpi of type bakery')
  bakery.each do |cpi|
    expect(cpi.dig('properties', 'url').to_s.end_with?('/api/v1'), "cpi #{cpi['name']}: properties.url does not end in /api/v1")
    unknown = cpi['properties'].keys - %w[url token ca_cert agent default_ephemeral_disk_mib bake_timeout_seconds]
    expect(unknown.empty?, "cpi #{cpi['name']}: properties #{unknown} are no cpi.json keys")
  end
  true
end

c.check('manifests/cloud-config.yml: every AZ names a CPI of cpi-config.yml; networks and vm_types use them') do
  cloud = load_yaml(File.join(manifests, 'cloud-config.yml'))
  cpi_names = load_yaml(File.join(manifests, 'cpi-config.yml'))['cpis'].map { |cpi| cpi['name'] }
  az_names = cloud.fetch('azs').map do |az|
    expect(cpi_names.include?(az['cpi']), "az #{az['name']} uses cpi #{az['cpi'].inspect}, not one of #{cpi_names}")
    az['name']
  end
  cloud.fetch('networks').each do |network|
    (network['subnets'] || []).each do |subnet|
      (subnet['azs'] || []).each { |az| expect(az_names.include?(az), "network #{network['name']} uses unknown az #{az}") }
      IPAddr.new(subnet['range']) if subnet['range']
    end
  end
  expect(cloud.fetch('vm_types').all? { |t| t['name'] && t['cloud_properties'].is_a?(Hash) }, 'a vm_type lacks name or cloud_properties')
  expect(cloud['compilation'].nil? || az_names.include?(cloud.dig('compilation', 'az')), 'compilation az is not an az')
end

c.check('manifests/bakery.yml deploys the bakery job with declared properties only') do
  manifest = load_yaml(File.join(manifests, 'bakery.yml'))
  expect(manifest['releases'].any? { |r| r['name'] == 'bakery' }, 'no bakery release')
  bakery_jobs = manifest['instance_groups'].flat_map { |ig| ig['jobs'] }.select { |j| j['release'] == 'bakery' }
  expect(bakery_jobs.map { |j| j['name'] }.include?('bakery'), 'no bakery job')
  bakery_jobs.each do |job|
    spec = load_yaml(File.join(RELEASE_DIR, 'jobs', job['name'], 'spec'))
    unknown = BoshTemplate.undeclared(spec, job['properties'] || {})
    expect(unknown.empty?, "job #{job['name']}: undeclared properties #{unknown.join(', ')}")
  end
  true
end

c.check('manifests and job specs name only executables the release packages install') do
  packaging = {}
  Dir[File.join(RELEASE_DIR, 'packages', '*', 'packaging')].each do |file|
    installed = File.read(file).scan(%r{\$\{BOSH_INSTALL_TARGET\}/(bin/[\w.-]+)}).flatten
    packaging[File.basename(File.dirname(file))] = installed
  end
  texts = Dir[File.join(manifests, '**', '*.yml')] + Dir[File.join(RELEASE_DIR, 'jobs', '*', 'spec')]
  texts.each do |file|
    File.read(file).scan(%r{/var/vcap/packages/([\w.-]+)/(bin/[\w.-]+)}).each do |pkg, exe|
      expect(packaging.key?(pkg), "#{file}: package #{pkg} is not in this release (packages: #{packaging.keys.sort.join(', ')})")
      expect(packaging[pkg].include?(exe), "#{file}: package #{pkg} does not install #{exe} (it installs #{packaging[pkg].join(', ')})")
    end
  end
  expect(packaging['bakery'].include?('bin/bakery-ppi-simpleweb'), 'the bakery package ships no PPI')
  true
end

c.check('manifests/bakery.yml renders with its variables filled in: HTTPS, tokens, boot path closed') do
  manifest = load_yaml(File.join(manifests, 'bakery.yml'))
  job = manifest['instance_groups'].flat_map { |ig| ig['jobs'] }.find { |j| j['name'] == 'bakery' }
  pem = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"
  values = {
    'bakery_ip' => '10.0.0.10', 'pi_subnet' => '10.0.0.0/24', 'relay_board_ip' => '10.0.0.5',
    'bakery_token' => 'a' * 32, 'bakery_read_only_token' => 'b' * 32,
    'bakery_tls' => { 'certificate' => pem, 'private_key' => "-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n", 'ca' => pem }
  }
  # Replaces every ((name)) (a whole value, or part of a string) as the director would.
  interpolate = lambda do |node|
    case node
    when Hash then node.transform_values { |v| interpolate.call(v) }
    when Array then node.map { |v| interpolate.call(v) }
    when /\A\(\(([a-z_]+)\)\)\z/ then values.fetch(Regexp.last_match(1))
    when String then node.gsub(/\(\(([a-z_]+)\)\)/) { values.fetch(Regexp.last_match(1)) }
    else node
    end
  end
  files = BoshTemplate::JobRenderer.new(File.join(RELEASE_DIR, 'jobs/bakery'))
                                   .render_all(interpolate.call(job['properties']), 'ip' => '10.0.0.10')
  toml = parse_simple_toml(files['config/bakery.toml'])
  expect(toml['tls_cert'] && toml['token_file'] && toml['boot_files_require_token'] == true && toml['pin_pi_addresses'] == true,
         toml.inspect)
  expect(files['config/token'] == "#{'a' * 32}\nro:#{'b' * 32}\n", files['config/token'].inspect)
  expect(files['config/dnsmasq.conf'].include?('pxe-service=0,"Raspberry Pi Boot",bootcode,10.0.0.10'), files['config/dnsmasq.conf'])
end

c.check('manifests/bakery.yml uses only AZs, vm_types, disk_types and networks of cloud-config.yml') do
  manifest = load_yaml(File.join(manifests, 'bakery.yml'))
  cloud = load_yaml(File.join(manifests, 'cloud-config.yml'))
  names = ->(key) { cloud.fetch(key).map { |entry| entry['name'] } }
  manifest['instance_groups'].each do |ig|
    (ig['azs'] || []).each { |az| expect(names.call('azs').include?(az), "#{ig['name']}: az #{az}") }
    expect(names.call('vm_types').include?(ig['vm_type']), "#{ig['name']}: vm_type #{ig['vm_type']}")
    if ig['persistent_disk_type']
      expect(names.call('disk_types').include?(ig['persistent_disk_type']), "#{ig['name']}: disk type #{ig['persistent_disk_type']}")
    end
    ig['networks'].each { |n| expect(names.call('networks').include?(n['name']), "#{ig['name']}: network #{n['name']}") }
  end
  true
end

Dir[File.join(manifests, 'ops/*.yml')].sort.each do |ops_file|
  c.check("#{rel(ops_file)} is a list of ops; bakery_cpi properties it sets are declared") do
    ops = load_yaml(ops_file)
    expect(ops.is_a?(Array) && ops.all? { |op| %w[replace remove].include?(op['type']) && op['path'].start_with?('/') },
           'not a list of replace/remove ops with paths')
    spec = load_yaml(File.join(RELEASE_DIR, 'jobs/bakery_cpi/spec'))
    cpi_jobs = ops.select { |op| op['value'].is_a?(Hash) && op['value']['name'] == 'bakery_cpi' }
    expect(!cpi_jobs.empty?, 'no op adds the bakery_cpi job') if File.basename(ops_file) == 'add-bakery-cpi.yml'
    cpi_jobs.each do |op|
      unknown = BoshTemplate.undeclared(spec, op['value']['properties'] || {})
      expect(unknown.empty?, "undeclared bakery_cpi properties #{unknown.join(', ')}")
    end
    true
  end
end

# --- Concourse pipeline ---------------------------------------------------------------------

def task_steps(node, found = [])
  case node
  when Hash
    found << node if node.key?('task') && node.key?('file')
    node.each_value { |v| task_steps(v, found) }
  when Array
    node.each { |v| task_steps(v, found) }
  end
  found
end

c.check('ci/pipeline.yml parses; every task file it names exists and runs a script of the repo') do
  pipeline = load_yaml(File.join(REPO_DIR, 'ci/pipeline.yml'))
  repo_resources = pipeline.fetch('resources').select { |r| r['type'] == 'git' && r.dig('source', 'uri').to_s.include?('bakery') }
  expect(!repo_resources.empty?, 'no git resource for the bakery repository')
  repo_names = repo_resources.map { |r| r['name'] }
  steps = task_steps(pipeline['jobs'])
  expect(!steps.empty?, 'no task steps')
  steps.each do |step|
    resource, path = step['file'].split('/', 2)
    expect(repo_names.include?(resource), "task #{step['task']}: file #{step['file']} is not in the bakery repository")
    task_path = File.join(REPO_DIR, path)
    expect(File.file?(task_path), "task #{step['task']}: #{path} does not exist")
    task = load_yaml(task_path)
    expect(task['platform'] == 'linux', "#{path}: platform #{task['platform'].inspect}")
    run_resource, run_path = task.dig('run', 'path').to_s.split('/', 2)
    expect(task['inputs'].any? { |i| i['name'] == run_resource }, "#{path}: run.path is not in an input")
    script = File.join(REPO_DIR, run_path)
    expect(File.file?(script) && File.executable?(script), "#{path}: #{run_path} is not an executable file")
    bash_syntax_ok(script)
  end
  true
end

c.check('every ci/tasks/*.yml is used by the pipeline') do
  pipeline = load_yaml(File.join(REPO_DIR, 'ci/pipeline.yml'))
  used = task_steps(pipeline['jobs']).map { |s| s['file'].split('/', 2)[1] }.uniq.sort
  on_disk = Dir[File.join(REPO_DIR, 'ci/tasks/*.yml')].map { |p| rel(p) }.sort
  expect(on_disk == used, "task files #{on_disk} vs used #{used}")
end

puts "rendered templates: #{out_dir}" unless temporary_out_dir
puts "validate.rb: #{c.passed} passed, #{c.failed} failed, #{c.skipped} skipped"
exit(c.failed.zero? ? 0 : 1)
