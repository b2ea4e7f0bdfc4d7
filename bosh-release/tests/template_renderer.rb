# frozen_string_literal: true

# tests/template_renderer.rb: renders BOSH job templates the way the director does, without
# the bosh CLI: ERB with trim mode '-', and an evaluation context offering p(), if_p() (with
# else / else_if_p) and spec. Like the director, a job only sees the properties its spec
# declares, filled in from the manifest properties or else the spec defaults.

require 'erb'
require 'json'
require 'ostruct'
require 'yaml'

module BoshTemplate
  # A property is read that is neither set nor defaulted (the director's UnknownProperty).
  class UnknownProperty < StandardError
    def initialize(names)
      super("can't find property #{names.map(&:inspect).join(' or ')}")
    end
  end

  # Looks a dotted name up in nested hashes; nil when any step is missing.
  def self.lookup(hash, name)
    name.split('.').reduce(hash) do |node, key|
      return nil unless node.is_a?(Hash) && node.key?(key)

      node[key]
    end
  end

  # Sets a dotted name in nested hashes.
  def self.store(hash, name, value)
    *parents, leaf = name.split('.')
    node = parents.reduce(hash) { |h, key| h[key] ||= {} }
    node[leaf] = value
  end

  # The properties a job gets: every declared property, from the manifest or its default.
  def self.job_properties(job_spec, manifest_properties)
    (job_spec['properties'] || {}).each_with_object({}) do |(name, definition), result|
      value = lookup(manifest_properties, name)
      value = definition['default'] if value.nil? && definition.is_a?(Hash)
      store(result, name, value) unless value.nil?
    end
  end

  # Manifest property names (leaves) that the job spec does not declare.
  def self.undeclared(job_spec, manifest_properties, prefix = nil)
    declared = (job_spec['properties'] || {}).keys
    manifest_properties.flat_map do |key, value|
      name = prefix ? "#{prefix}.#{key}" : key.to_s
      if declared.include?(name)
        []
      elsif value.is_a?(Hash) && declared.any? { |d| d.start_with?("#{name}.") }
        undeclared(job_spec, value, name)
      else
        [name]
      end
    end
  end

  # Turns nested hashes into nested OpenStructs, as the director's `spec` object.
  def self.openstruct(value)
    case value
    when Hash then OpenStruct.new(value.transform_values { |v| openstruct(v) })
    when Array then value.map { |v| openstruct(v) }
    else value
    end
  end

  # What `if_p` returns when its block ran: the else branches do nothing.
  class InactiveElseBlock
    def else; end

    def else_if_p(*_names)
      self
    end
  end

  # What `if_p` returns when its block did not run: the else branches may.
  class ActiveElseBlock
    def initialize(context)
      @context = context
    end

    def else
      yield
    end

    def else_if_p(*names, &block)
      @context.if_p(*names, &block)
    end
  end

  # The object templates are evaluated against.
  class EvaluationContext
    attr_reader :raw_properties, :spec, :name, :index

    def initialize(properties, spec_hash)
      @raw_properties = properties
      @spec = BoshTemplate.openstruct(spec_hash)
      @name = spec_hash['name']
      @index = spec_hash['index']
    end

    # p(name), p(name, default), p([name, other_name], default)
    def p(*args)
      names = Array(args[0])
      names.each do |name|
        value = BoshTemplate.lookup(@raw_properties, name)
        return value unless value.nil?
      end
      return args[1] if args.length == 2

      raise UnknownProperty, names
    end

    def if_p(*names)
      values = names.map do |name|
        value = BoshTemplate.lookup(@raw_properties, name)
        return ActiveElseBlock.new(self) if value.nil?

        value
      end
      yield(*values)
      InactiveElseBlock.new
    end

    def get_binding # rubocop:disable Naming/AccessorMethodName
      binding
    end
  end

  # Renders the templates of one job directory.
  class JobRenderer
    attr_reader :job_dir, :job_spec

    def initialize(job_dir)
      @job_dir = job_dir
      @job_spec = YAML.safe_load(File.read(File.join(job_dir, 'spec')))
    end

    def default_spec
      {
        'name' => @job_spec['name'], 'id' => '8a3b9f1e-5c4d-4e2f-9a1b-0c2d3e4f5a6b', 'index' => 0,
        'az' => 'z1', 'address' => '10.0.0.2', 'ip' => '10.0.0.2', 'bootstrap' => true,
        'deployment' => 'bakery', 'persistent_disk' => 102_400,
        'networks' => { 'default' => { 'ip' => '10.0.0.2', 'netmask' => '255.255.255.0',
                                       'gateway' => '10.0.0.1', 'default' => %w[dns gateway] } },
        'release' => { 'name' => 'bakery', 'version' => '0+dev.1' }
      }
    end

    # Renders one template file (relative to the job dir) into a string.
    def render_file(relative, manifest_properties, spec_overrides = {})
      text = File.read(File.join(@job_dir, relative))
      properties = BoshTemplate.job_properties(@job_spec, manifest_properties)
      context = EvaluationContext.new(properties, default_spec.merge(spec_overrides))
      erb = ERB.new(text, trim_mode: '-')
      erb.filename = File.join(@job_dir, relative)
      erb.result(context.get_binding)
    end

    # Renders every template and the monit file: { destination => content }.
    def render_all(manifest_properties, spec_overrides = {})
      rendered = { 'monit' => render_file('monit', manifest_properties, spec_overrides) }
      (@job_spec['templates'] || {}).each do |source, destination|
        rendered[destination] = render_file(File.join('templates', source), manifest_properties, spec_overrides)
      end
      rendered
    end
  end
end
